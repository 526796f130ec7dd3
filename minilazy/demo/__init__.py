"""The demo model: a tiny LLaVA-1.5 that minilazy trains on generated scenes of coloured shapes.

scenes.py draws and renders scenes, questions.py asks questions with one right answer,
tokenizer.py trains the word-level tokenizer, dataset.py builds training conversations,
initialization.py holds the config and random initialisation, train.py trains with minilazy's own
model code on the torch backend, recipe.py chains its phases into one run, evaluate.py scores
held-out scenes, grounding.py is an auxiliary training loss on where named objects are, and
examples.py writes the example images. The probes of the relation questions live in experiments/.
"""
