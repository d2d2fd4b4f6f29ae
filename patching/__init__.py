"""ComfyUI glue: frozen configs, per-model state, importance capture from CFG and the per-family block
adapters that call the pure algorithms of ``merging/``. Node classes live in ``nodes/`` and only
validate inputs, build a config and call :func:`.apply.apply_token_merge`.
"""
