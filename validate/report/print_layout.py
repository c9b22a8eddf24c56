"""The report on paper: the print stylesheet shared by a browser's Print and :mod:`validate.report.pdf`.

Only ``@media print`` rules, so the screen report is unchanged. On paper:

- page one holds the title, a table of contents (the report's section links, which stay live links in
  the PDF) and the verdict with its gate table; every later section starts on a new page;
- tables never hide columns behind a scroll bar: cells wrap (at spaces and hyphens; a word longer
  than its column breaks), header rows repeat on every page, a row is never split across pages; a
  table still wider than the page after wrapping is scaled down to the page width by
  :mod:`validate.report.pdf` (CSS ``zoom``);
- colours are printed as on screen (verdict and tag colours carry meaning), the dark banner becomes
  ink on white, and plotly's tool bar is hidden;
- the protocol copy and other ``<details>`` blocks print whole (no fixed height, long lines wrap).

Text sizes are divided by ``--print-scale`` (1 here): :mod:`validate.report.pdf` lays the page out wider
and prints it scaled down by that factor, so that figures get room for their legends while text keeps
the sizes below on paper.
"""

from __future__ import annotations

PRINT_CSS = """
@media print {
  :root { --print-scale: 1; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  html, body { background: #fff; font-size: calc(10pt / var(--print-scale)); }
  header { background: #fff; color: var(--ink); padding: 0 0 6pt; border-bottom: 2px solid var(--ink); }
  header h1 { font-size: calc(17pt / var(--print-scale)); }
  header p { color: var(--muted); }
  nav { position: static; background: #fff; border: 0; padding: 6pt 0 0; columns: 3; column-gap: 18pt; }
  nav::before { content: "Contents"; display: block; column-span: all; font-weight: 600; margin-bottom: 2pt;
                font-size: calc(11pt / var(--print-scale)); }
  nav a { display: block; margin: 0; font-size: calc(9pt / var(--print-scale)); line-height: 1.35; }
  main { max-width: none; margin: 0; padding: 0; }
  section { border: 0; border-radius: 0; padding: 0; margin: 10pt 0 0; background: #fff; }
  section + section { break-before: page; }
  h2 { font-size: calc(14pt / var(--print-scale)); }
  h2, h3 { break-after: avoid-page; }
  .scroll { overflow: visible !important; max-width: none; }
  table { width: 100%; font-size: calc(7.5pt / var(--print-scale)); margin: 4pt 0 8pt; }
  thead { display: table-header-group; }
  tr { break-inside: avoid-page; }
  th, td { padding: 2pt 3pt; overflow-wrap: break-word; }
  td.num { white-space: normal; }
  .verdict { font-size: calc(15pt / var(--print-scale)); padding: 6pt 10pt; }
  .tag { font-size: calc(7pt / var(--print-scale)); padding: 0 3pt; white-space: nowrap; }
  .grid2 { display: block; }
  .figure { break-inside: avoid-page; min-height: 0; }
  .modebar-container, .modebar { display: none !important; }
  details pre { max-height: none; overflow: visible; white-space: pre-wrap; overflow-wrap: anywhere;
                font-size: calc(7.5pt / var(--print-scale)); }
  p.note, .muted { font-size: calc(8.5pt / var(--print-scale)); }
}
"""
