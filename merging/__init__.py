"""Pure-torch token merging algorithms: spatial ToMe (ToMeSD), importance-based merging (IBTM) and
structure-then-detail merging (SDTM). Nothing here imports ComfyUI; the glue that hooks these into
ComfyUI's model patches lives outside this package.
"""
