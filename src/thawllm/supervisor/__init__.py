"""The supervising side: start, restore, watch and stop service processes."""
