"""What the journal says, for people and programs: report.json/.csv/.html, live progress, plans."""
