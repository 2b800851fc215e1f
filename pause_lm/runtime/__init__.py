"""How a run executes: console and logging, gin settings, processes and device meshes, the
run lock and the files of a run that light readers need (no model or data code here)."""
