"""minilazy: a small Triton inference runtime for multimodal LLMs with Lazy Attention and a Q Cache.

The Python API in a few names: `Pipeline.load(dir)` and `Pipeline.ask(prompt, image)`; `calibrate`
chooses a `LayerPlan` of lazy layers; `FastV` prunes image tokens; `Turn`s are a conversation's earlier
turns (README, "Python API").
"""

from minilazy.fastv import FastV
from minilazy.lazy.calibrate import calibrate
from minilazy.lazy.plan import LayerPlan
from minilazy.pipeline import Answer, Pipeline
from minilazy.prompts import Turn
from minilazy.sampler import SamplingParams

__all__ = ["Answer", "FastV", "LayerPlan", "Pipeline", "SamplingParams", "Turn", "calibrate"]
