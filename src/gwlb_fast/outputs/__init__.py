"""What a run writes beside its output capture (DESIGN.md sections 7, 10 and 11): the summary, flow and threat
logs (:mod:`.report`), the HTML report (:mod:`.htmlreport`), the dropped packets with their reasons
(:mod:`.drops`), and output files that never harm an input (:mod:`.outfiles`)."""
