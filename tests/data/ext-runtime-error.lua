-- A script that fails while it runs: ttserver logs "Lua error" and runs on
-- with what was defined before the error.
function before(key) return "before " .. key end
error("the script stops here")
function after(key) return "after " .. key end
