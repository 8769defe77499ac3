package devgate.example;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A minimal JSON reader and writer, enough for etcd's JSON gateway and for
 * finding the device id in a frame body. No library: the example must build
 * with the JDK and Netty alone. A real project would use Jackson or Gson.
 *
 * <p>Values map to: object = {@code Map<String,Object>} (insertion order),
 * array = {@code List<Object>}, string = {@code String}, number =
 * {@code BigDecimal}, true/false = {@code Boolean}, null = {@code null}.
 */
final class Json {
    /** Nesting limit, as pkg/frame's JSONField: deeper input is rejected. */
    static final int MAX_DEPTH = 64;

    private Json() {}

    /** Parses one JSON value; anything after it but whitespace is an error. */
    static Object parse(String s) {
        Reader r = new Reader(s);
        r.ws();
        Object v = r.value(0);
        r.ws();
        if (r.i != s.length()) {
            throw r.error("data after the value");
        }
        return v;
    }

    /**
     * Returns the device id in a frame body the way the gateway's default
     * extractor (pkg/frame JSONField "devid") reads it, or null when the Go
     * extractor would fail and the demo backend would echo the frame.
     *
     * <p>The body (decoded byte-for-byte as ISO-8859-1) must be one
     * well-formed JSON object. A member whose raw name equals {@code name}
     * gives the value; a second one gives null (pkg/frame: ErrDupKey). A
     * string value counts when it is non-empty, has no
     * backslash escape and is printable ASCII (0x21..0x7e); a number gives
     * its literal text. Anything else gives null.
     */
    static String member(String body, String name) {
        Reader r = new Reader(body);
        String raw = null;
        boolean found = false;
        try {
            r.ws();
            r.expect('{');
            r.ws();
            if (!r.eat('}')) {
                for (;;) {
                    r.ws();
                    int ns = r.i;
                    r.string();
                    String rawName = body.substring(ns + 1, r.i - 1);
                    r.ws();
                    r.expect(':');
                    r.ws();
                    int vs = r.i;
                    r.value(1);
                    if (rawName.equals(name)) {
                        if (found) {
                            return null; // readers disagree on which one counts
                        }
                        found = true;
                        raw = body.substring(vs, r.i);
                    }
                    r.ws();
                    if (r.eat(',')) {
                        continue;
                    }
                    r.expect('}');
                    break;
                }
            }
            r.ws();
            if (r.i != body.length()) {
                return null;
            }
        } catch (IllegalArgumentException e) {
            return null; // not JSON: the frame is echoed
        }
        if (raw == null || raw.isEmpty()) {
            return null;
        }
        String key;
        char c0 = raw.charAt(0);
        if (c0 == '"') {
            key = raw.substring(1, raw.length() - 1);
            if (key.indexOf('\\') >= 0) {
                return null;
            }
        } else if (c0 == '-' || (c0 >= '0' && c0 <= '9')) {
            key = raw;
        } else {
            return null; // object, array, true, false, null
        }
        if (key.isEmpty()) {
            return null;
        }
        for (int i = 0; i < key.length(); i++) {
            char c = key.charAt(i);
            if (c < 0x21 || c > 0x7e) {
                return null;
            }
        }
        return key;
    }

    /** Encodes a value built from Map, List, String, Number, Boolean, null. */
    static String encode(Object v) {
        StringBuilder b = new StringBuilder();
        encode(b, v);
        return b.toString();
    }

    private static void encode(StringBuilder b, Object v) {
        if (v == null) {
            b.append("null");
        } else if (v instanceof String) {
            quote(b, (String) v);
        } else if (v instanceof Number || v instanceof Boolean) {
            b.append(v);
        } else if (v instanceof Map) {
            b.append('{');
            boolean first = true;
            for (Map.Entry<?, ?> e : ((Map<?, ?>) v).entrySet()) {
                if (!first) {
                    b.append(',');
                }
                first = false;
                quote(b, String.valueOf(e.getKey()));
                b.append(':');
                encode(b, e.getValue());
            }
            b.append('}');
        } else if (v instanceof List) {
            b.append('[');
            boolean first = true;
            for (Object e : (List<?>) v) {
                if (!first) {
                    b.append(',');
                }
                first = false;
                encode(b, e);
            }
            b.append(']');
        } else {
            throw new IllegalArgumentException("cannot encode " + v.getClass());
        }
    }

    /** Returns s as a JSON string literal, quotes included. */
    static String quote(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2);
        quote(b, s);
        return b.toString();
    }

    private static void quote(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': b.append("\\\""); break;
                case '\\': b.append("\\\\"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                case '\t': b.append("\\t"); break;
                default:
                    if (c < 0x20 || c == 0x2028 || c == 0x2029) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
            }
        }
        b.append('"');
    }

    /** Reads a member of a decoded object, or null if v is not an object. */
    static Object get(Object v, String name) {
        return v instanceof Map ? ((Map<?, ?>) v).get(name) : null;
    }

    /**
     * Reads an int64 that etcd's gateway writes as a JSON string ("123"),
     * or as a number; a missing member (proto3 omits zero) gives 0.
     */
    static long getLong(Object v, String name) {
        Object x = get(v, name);
        if (x == null) {
            return 0;
        }
        if (x instanceof BigDecimal) {
            return ((BigDecimal) x).longValueExact();
        }
        if (x instanceof String) {
            return Long.parseLong((String) x);
        }
        throw new IllegalArgumentException(name + " is not an integer: " + x);
    }

    private static final class Reader {
        final String s;
        int i;

        Reader(String s) {
            this.s = s;
        }

        IllegalArgumentException error(String what) {
            return new IllegalArgumentException("JSON: " + what + " at offset " + i);
        }

        void ws() {
            while (i < s.length()) {
                char c = s.charAt(i);
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                    return;
                }
                i++;
            }
        }

        boolean eat(char c) {
            if (i < s.length() && s.charAt(i) == c) {
                i++;
                return true;
            }
            return false;
        }

        void expect(char c) {
            if (!eat(c)) {
                throw error("want '" + c + "'");
            }
        }

        Object value(int depth) {
            if (depth > MAX_DEPTH) {
                throw error("nested too deep");
            }
            if (i >= s.length()) {
                throw error("unexpected end");
            }
            char c = s.charAt(i);
            switch (c) {
                case '{': return object(depth);
                case '[': return array(depth);
                case '"': return string();
                case 't': return literal("true", Boolean.TRUE);
                case 'f': return literal("false", Boolean.FALSE);
                case 'n': return literal("null", null);
                default:
                    if (c == '-' || (c >= '0' && c <= '9')) {
                        return number();
                    }
                    throw error("unexpected '" + c + "'");
            }
        }

        Object literal(String word, Object v) {
            if (!s.startsWith(word, i)) {
                throw error("bad literal");
            }
            i += word.length();
            return v;
        }

        Map<String, Object> object(int depth) {
            Map<String, Object> m = new LinkedHashMap<>();
            expect('{');
            ws();
            if (eat('}')) {
                return m;
            }
            for (;;) {
                ws();
                String k = string();
                ws();
                expect(':');
                ws();
                Object v = value(depth + 1);
                if (m.putIfAbsent(k, v) != null) { // pkg/frame refuses a duplicate key too
                    throw error("duplicate member \"" + k + "\"");
                }
                ws();
                if (eat(',')) {
                    continue;
                }
                expect('}');
                return m;
            }
        }

        List<Object> array(int depth) {
            List<Object> l = new ArrayList<>();
            expect('[');
            ws();
            if (eat(']')) {
                return l;
            }
            for (;;) {
                ws();
                l.add(value(depth + 1));
                ws();
                if (eat(',')) {
                    continue;
                }
                expect(']');
                return l;
            }
        }

        String string() {
            expect('"');
            StringBuilder b = null;
            int start = i;
            while (i < s.length()) {
                char c = s.charAt(i);
                if (c == '"') {
                    String out = b == null ? s.substring(start, i) : b.append(s, start, i).toString();
                    i++;
                    return out;
                }
                if (c < 0x20) {
                    throw error("control character in string");
                }
                if (c != '\\') {
                    i++;
                    continue;
                }
                if (b == null) {
                    b = new StringBuilder();
                }
                b.append(s, start, i);
                i++;
                if (i >= s.length()) {
                    break;
                }
                char e = s.charAt(i++);
                switch (e) {
                    case '"': b.append('"'); break;
                    case '\\': b.append('\\'); break;
                    case '/': b.append('/'); break;
                    case 'b': b.append('\b'); break;
                    case 'f': b.append('\f'); break;
                    case 'n': b.append('\n'); break;
                    case 'r': b.append('\r'); break;
                    case 't': b.append('\t'); break;
                    case 'u':
                        if (i + 4 > s.length()) {
                            throw error("short \\u escape");
                        }
                        try {
                            b.append((char) Integer.parseInt(s.substring(i, i + 4), 16));
                        } catch (NumberFormatException x) {
                            throw error("bad \\u escape");
                        }
                        i += 4;
                        break;
                    default:
                        throw error("bad escape");
                }
                start = i;
            }
            throw error("unterminated string");
        }

        BigDecimal number() {
            int start = i;
            eat('-');
            if (eat('0')) {
                // no leading zeros
            } else if (digits() == 0) {
                throw error("bad number");
            }
            if (eat('.') && digits() == 0) {
                throw error("bad fraction");
            }
            if (eat('e') || eat('E')) {
                if (!eat('+')) {
                    eat('-');
                }
                if (digits() == 0) {
                    throw error("bad exponent");
                }
            }
            return new BigDecimal(s.substring(start, i));
        }

        int digits() {
            int n = 0;
            while (i < s.length() && s.charAt(i) >= '0' && s.charAt(i) <= '9') {
                i++;
                n++;
            }
            return n;
        }
    }
}
