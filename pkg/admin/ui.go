package admin

import (
	"embed"
	"io/fs"
	"net/http"
)

// uiFiles is the dashboard: plain HTML, JS and CSS, no build step, nothing
// fetched from elsewhere (it works offline).
//
//go:embed ui
var uiFiles embed.FS

// uiCSP keeps the page to its own files and this port's API.
const uiCSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// uiHandler serves the dashboard under /ui/. The page itself is public (it
// holds no data); every call it makes needs the token it asks for.
func uiHandler() http.Handler {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", uiCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}
