"""tuneyard core: hook specs, plugin manager, registry, run spec and run engine.

Never imports textual; imports torch only inside the functions that train or evaluate.
"""
