// devid for nginx stream (njs): js_preread waits for the whole first frame
// (type u8, version u8, time u16, len u16 big-endian, JSON body), then
// keeps the body's "devid" for `hash $devid consistent`.
var re = /"devid"\s*:\s*"([^"\\]+)"/;

function preread(s) {
    var buf = '';
    s.on('upstream', function (data, flags) {
        buf += data;
        if (buf.length < 6 && !flags.last) {
            return; // wait for the header
        }
        var n = (buf.charCodeAt(4) << 8) | buf.charCodeAt(5);
        if (buf.length < 6 + n && !flags.last) {
            return; // wait for the body
        }
        var m = re.exec(buf.substring(6, 6 + n));
        if (!m) {
            s.deny();
            return;
        }
        s.variables.devid = m[1];
        s.off('upstream');
        s.done();
    });
}

export default {preread};
