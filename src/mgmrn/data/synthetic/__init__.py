"""The built-in drawn sets: shapes (``demo``) and part-attribute creatures (``parts``)."""
