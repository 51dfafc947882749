"""The model families (PRODUCT.md "Every model family"): one module per family (`sd`, `sd3`, `flux`,
`qwen_image`, `pixart`) and a generic one; `registry.recognise(pipe)` says which a pipeline is, and
`features.Features` is what the parser, buttons and `/models` read. Torch-free: the families read
configs and shape a pipeline call's arguments.
"""
