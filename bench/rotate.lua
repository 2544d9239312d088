-- wrk script for ``python -m bench --peer``'s refresh scenario (bench/wrk.py): the peer's own
-- bench.lua, loaded unchanged from the path in BENCH_LUA, in its rotating-chain mode
-- (BENCH_MODE=rotate). bench.lua takes each response's next refresh token with the pattern
-- "refresh_token":"..." (compact JSON, as the peer writes it); idp writes its token responses with
-- a space after the colon (RFC 6749 5.1 allows either). This wrapper closes that space before
-- bench.lua sees the body, and changes nothing else: bench.lua still counts (its expectation
-- already ignores whitespace), times the window and prints WRKRESULT. Both servers run through
-- it, so the load generator does the same work for each.
dofile(assert(os.getenv("BENCH_LUA"), "BENCH_LUA: the path of bench.lua"))

local counted = response
function response(status, headers, body)
  return counted(status, headers, (body:gsub('"refresh_token"%s*:%s*"', '"refresh_token":"', 1)))
end
