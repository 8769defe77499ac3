-- devid: the "devid" string member of the first frame's JSON body.
-- Frame: type u8, version u8, time u16, len u16 (big-endian), body.
-- Returns nil (the fetch fails) when the frame is short or has no devid.
core.register_fetches("devid", function(txn)
    local d = txn.req:data(0)
    if d == nil or #d < 6 then return nil end
    local n = d:byte(5) * 256 + d:byte(6)
    if #d < 6 + n then return nil end
    local body = d:sub(7, 6 + n)
    return body:match('"devid"%s*:%s*"([^"\\]+)"')
end)
