"""`python cli.py bench`: speed and memory of minilazy's attention variants against transformers.

`variants` names what is compared (full attention, lazy plans, the decode fast
path, FastV), `measure` times minilazy's `generate` and reads memory and copy
bandwidth, `hf` times transformers' `generate` on the same inputs, `report`
derives ratios, capacity and roofline figures and prints the table, `plot`
draws them.
"""
