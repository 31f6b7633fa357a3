"""Replays on every core and on a cluster (DESIGN.md section 14): flow-sharded workers (:mod:`.parallel`), the
shared-memory rings their captures merge through (:mod:`.rings`), and Ray (:mod:`.distributed`)."""
