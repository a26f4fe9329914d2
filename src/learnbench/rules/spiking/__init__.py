"""Rules that learn from exact spike times: SpikeProp (spikeprop.py) on model=srm."""
