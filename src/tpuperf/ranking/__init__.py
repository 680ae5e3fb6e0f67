"""Ranking new programs: the export stage (a trained ensemble as a self-contained model directory)
and `tpuperf rank`."""
