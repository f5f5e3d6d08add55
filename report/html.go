package report

import (
	"bytes"
	"encoding/base64"
	"html/template"
)

// page is what the HTML template shows.
type page struct {
	Title    string
	Created  string
	Sections []*section
}

// section is one part of the page: the run, one EPK output or one
// experiment directory.
type section struct {
	ID      string
	Title   string
	Intro   string
	Notes   []string
	Tables  []*table
	Pre     []preBlock
	Figures []*pageFigure
}

// table is a titled key-value table.
type table struct {
	Title string
	Note  string
	Rows  []field
}

// preBlock is preformatted text (pretty-printed JSON) under a title.
type preBlock struct {
	Title string
	Text  string
}

// pageFigure is a figure as the page shows it: an inlined PNG and, when
// the report wrote it, links to its files.
type pageFigure struct {
	ID      string
	Title   string
	Caption string
	Src     template.HTMLAttr // src="data:image/png;base64,..."
	PNGHref string            // relative link to the PNG file ("" for none)
	SVGHref string            // relative link to the SVG file ("" for none)
}

// dataURL returns the src attribute of an img element showing png, as a
// data: URL. It is safe as it stands: base64 has no quote or markup
// character.
func dataURL(png []byte) template.HTMLAttr {
	return template.HTMLAttr(`src="data:image/png;base64,` + base64.StdEncoding.EncodeToString(png) + `"`)
}

// Key is the field's key, the table's first column.
func (f field) Key() string { return f.key }

// Value is the field's value with byte counts and long durations made
// readable.
func (f field) Value() string { return readable(f) }

// renderPage executes the page template.
func renderPage(p *page) ([]byte, error) {
	t, err := template.New("page").Parse(pageTemplate)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, p); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// pageTemplate is the whole page: styles inline, no scripts, no external
// resources. A section's figures are small multiples in a grid, each a
// link to its full-size file.
const pageTemplate = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; background: #fff; margin: 0; }
main { max-width: 1100px; margin: 0 auto; padding: 1em 2em 4em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.35em; border-bottom: 2px solid #ccd; padding-bottom: 0.2em; margin-top: 2.2em; }
h3 { font-size: 1.1em; margin: 1.4em 0 0.4em; }
.meta { color: #666; margin-top: 0; }
nav ul { columns: 2; padding-left: 1.2em; }
table { border-collapse: collapse; margin: 0.3em 0 1em; font-size: 0.92em; }
td, th { border: 1px solid #dde; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
td.k { font-family: ui-monospace, Menlo, Consolas, monospace; background: #f6f6fa; }
td.v { font-family: ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
pre { background: #f6f6fa; border: 1px solid #dde; padding: 0.7em; overflow-x: auto; font-size: 0.85em; max-height: 36em; }
figure { margin: 1.2em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.92em; color: #444; max-width: 60em; }
figcaption a { color: #336; }
.note { color: #8a5a00; font-size: 0.92em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 0.5em 1.5em; }
.grid figure { margin: 0.6em 0 1em; }
.grid figcaption { font-size: 0.85em; }
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p class="meta">Generated {{.Created}} by explaind report.</p>
<nav><ul>
{{- range .Sections}}
<li><a href="#{{.ID}}">{{.Title}}</a></li>
{{- end}}
</ul></nav>
{{- range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
{{- if .Intro}}
<p>{{.Intro}}</p>
{{- end}}
{{- range .Notes}}
<p class="note">{{.}}</p>
{{- end}}
{{- range .Tables}}
<h3>{{.Title}}</h3>
{{- if .Note}}
<p class="note">{{.Note}}</p>
{{- end}}
<table>
{{- range .Rows}}
<tr><td class="k">{{.Key}}</td><td class="v">{{.Value}}</td></tr>
{{- end}}
</table>
{{- end}}
{{- range .Pre}}
<h3>{{.Title}}</h3>
<pre>{{.Text}}</pre>
{{- end}}
{{- if .Figures}}
<div class="figures{{if gt (len .Figures) 1}} grid{{end}}">
{{- range .Figures}}
<figure id="{{.ID}}">
<h3>{{.Title}}</h3>
{{if .PNGHref}}<a href="{{.PNGHref}}" title="open at full size">{{end}}<img {{.Src}} alt="{{.Title}}">{{if .PNGHref}}</a>{{end}}
<figcaption>{{.Caption}}
{{- if .SVGHref}} Files: <a href="{{.PNGHref}}">PNG</a>, <a href="{{.SVGHref}}">SVG</a>.{{else if .PNGHref}} <a href="{{.PNGHref}}">Full size</a>.{{end}}</figcaption>
</figure>
{{- end}}
</div>
{{- end}}
</section>
{{- end}}
</main>
</body>
</html>
`
