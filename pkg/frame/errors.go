package frame

import "errors"

// Sentinel errors. Returned errors may wrap them with detail, so compare
// with errors.Is, and count them in metrics with Reason.
var (
	// ErrShort means buf ends before the answer is known: read more bytes
	// and call again. It is never wrapped, so the preread loop can test it
	// cheaply, and it is not a failure by itself.
	ErrShort = errors.New("frame: need more bytes")
	// ErrBadHeader means a decoded frame length is shorter than the header.
	ErrBadHeader = errors.New("frame: bad header")
	// ErrTooLarge means a length field gives a frame over MaxFrameLength.
	ErrTooLarge = errors.New("frame: too large")
	// ErrNoKey means the key frame has no usable key at the path or range.
	ErrNoKey = errors.New("frame: no key")
	// ErrKeyTooLong means the key is longer than Matcher.MaxKeyLen.
	ErrKeyTooLong = errors.New("frame: key too long")
	// ErrNotJSON means the body is not one well-formed JSON object (or
	// nests deeper than 64 levels).
	ErrNotJSON = errors.New("frame: body is not a JSON object")
	// ErrTooManyFrames means Matcher.MaxFrames frames passed without a key frame.
	ErrTooManyFrames = errors.New("frame: too many frames without a key")
	// ErrPrereadCap means the key frame does not end within Matcher.MaxBytes.
	ErrPrereadCap = errors.New("frame: preread cap reached without a key")
	// ErrBadKey means the key has bytes outside printable ASCII (0x21..0x7e)
	// or JSON escapes.
	ErrBadKey = errors.New("frame: key is not plain printable ASCII")
	// ErrDupKey means a member on the key path appears twice in its object
	// (a second "devid"): the gateway and a last-wins backend (Jackson,
	// encoding/json) would read different keys, so the frame is refused.
	ErrDupKey = errors.New("frame: key member appears twice")
	// ErrBadConfig means a Config, Matcher or extractor setting is invalid.
	ErrBadConfig = errors.New("frame: bad config")
)

// Reason returns a short, fixed label for err, for metrics: "ok" for nil,
// "short", "bad_header", "too_large", "no_key", "key_too_long", "not_json",
// "too_many_frames", "preread_cap", "bad_key", "dup_key", "bad_config", or
// "other".
func Reason(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrShort):
		return "short"
	case errors.Is(err, ErrBadHeader):
		return "bad_header"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrNoKey):
		return "no_key"
	case errors.Is(err, ErrKeyTooLong):
		return "key_too_long"
	case errors.Is(err, ErrNotJSON):
		return "not_json"
	case errors.Is(err, ErrTooManyFrames):
		return "too_many_frames"
	case errors.Is(err, ErrPrereadCap):
		return "preread_cap"
	case errors.Is(err, ErrBadKey):
		return "bad_key"
	case errors.Is(err, ErrDupKey):
		return "dup_key"
	case errors.Is(err, ErrBadConfig):
		return "bad_config"
	}
	return "other"
}
