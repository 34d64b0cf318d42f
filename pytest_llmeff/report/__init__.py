"""What users read, floor 8: the terminal table, markdown, CSV, JSON exports, HTML, figures, the analysis."""
