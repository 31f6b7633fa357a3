"""The stages of the modelled path, in the order a packet meets them (DESIGN.md section 1): subnets and route tables
(:mod:`.vpc`), the GWLB endpoint (:mod:`.gwlbe`), the GWLB (:mod:`.gwlb`, its Maglev choice :mod:`.maglev` and what
its health checks see :mod:`.health`), the firewalls (:mod:`.firewall` with their policy :mod:`.policy`), the NAT
gateway (:mod:`.natgw`), and IPv4 fragments along the way (:mod:`.fragments`). ``gwlb_fast.pipeline`` wires them."""
