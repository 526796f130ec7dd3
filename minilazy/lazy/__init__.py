"""Lazy Attention with a Q Cache: layer plans, their calibration, and the layers that inherit attention.

`plan.LayerPlan` says which layers are lazy and whose attention each inherits; `calibrate` measures
how alike the layers' attention over image keys is and chooses a plan, or (`effect`) chooses it by
the measured effect of inheriting on the model's output distributions; `runtime.LazyRuntime` is the
`DecoderSetupHook` that builds the caches and lazy layers of one generation call (`layers`,
`state`); `heatmap` draws the divergence matrix with a plan's anchors.
"""
