-- A script Lua cannot compile: ttserver logs "Lua error" and runs on; the
-- function below is never defined, but Lua's own functions can be called.
function defined_first(key) return "defined" end
function broken(key) return = key end
