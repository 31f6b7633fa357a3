"""The firewall's content inspection (DESIGN.md section 12): stream, App-ID, URL filtering, threat signatures."""
