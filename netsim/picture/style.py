"""The pages' one stylesheet, and the Content-Security-Policy that admits exactly it.

The policy (``default-src 'none'``, the stylesheet by its hash) lets a page load nothing, run no script and
apply no other style: text from the input that escaped by mistake would still be inert. The pages
therefore use no ``style`` attribute and no script. Colours pair with a mark, weight or border pattern
everywhere (the path reads in greyscale): on the path ✔, bold, a solid bar; met but not taken ✘, a
dashed bar; the deciding step ◆ and a double outline.
"""

from __future__ import annotations

import base64
import hashlib

CSS = """
:root{--ink:#1b1b1b;--muted:#505050;--line:#8a8a8a;--hit:#1a7f37;--hitbg:#e7f5ea;--miss:#6b6b6b;
--cap:#1a7f37;--capbg:#e3f4e6;--byp:#8a5a00;--bypbg:#fdf1d8;--drop:#b3261e;--dropbg:#fce4e2;
--loop:#6a3fb5;--loopbg:#efe7fb;--unc:#505050;--uncbg:#ececec;--focus:#0b57d0}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0 auto;max-width:1260px;padding:12px 16px 32px;font:15px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"DejaVu Sans",sans-serif;color:var(--ink);background:#fff}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono","Liberation Mono",monospace;font-size:13px}
code{overflow-wrap:anywhere}
h1{font-size:20px;margin:4px 0 8px}h2{font-size:17px;margin:0 0 6px}h3{font-size:15px;margin:0 0 4px}
a{color:#0b4fb3}
a:focus-visible,summary:focus-visible,[tabindex]:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:-9999px}.skip:focus{left:16px;top:8px;background:#fff;padding:4px 8px;z-index:2}
.verdict{border:3px solid var(--ink);border-radius:6px;padding:10px 14px;margin:8px 0 14px}
.verdict .big{font-size:22px;font-weight:700;letter-spacing:.02em}
.verdict p{margin:6px 0 0}
.v-captured{border-color:var(--cap);background:var(--capbg)}
.v-bypassed{border-color:var(--byp);background:var(--bypbg);border-style:dashed}
.v-dropped{border-color:var(--drop);background:var(--dropbg);border-style:double;border-width:5px}
.v-looped{border-color:var(--loop);background:var(--loopbg);border-style:dotted}
.v-uncertain{border-color:var(--unc);background:var(--uncbg);border-style:dotted}
.meta{color:var(--muted);margin:2px 0}
.notes{color:var(--muted);font-size:14px;padding-left:20px}
.overview{list-style:none;padding:0;margin:4px 0 6px;display:flex;flex-wrap:wrap;gap:4px 2px;align-items:center}
.overview li{display:flex;align-items:center}
.overview li+li::before{content:"\\2192";margin:0 4px;color:var(--muted)}
.overview a,.overview span{display:inline-block;border:2px solid var(--ink);border-radius:12px;padding:1px 8px;
font-size:13px;text-decoration:none;color:var(--ink);background:#fff}
.overview .lane-chip{border-style:dashed;font-weight:600}
.overview .decides{border-style:double;border-width:4px;font-weight:700}
.lane{border:2px solid var(--line);border-radius:8px;padding:10px 12px;margin:0 0 12px}
.lane.decided{border-width:3px;border-color:var(--ink)}
.lane-head{display:flex;flex-wrap:wrap;gap:4px 12px;align-items:baseline}
.hooks{display:flex;flex-wrap:wrap;gap:10px;margin-top:8px}
.hook{flex:1 1 500px;min-width:0;border:1px solid var(--line);border-radius:6px;padding:8px}
.hook h3 .pass{font-weight:400;color:var(--muted)}
.chain{margin:6px 0 2px;padding:4px 6px;background:#f3f3f3;border-radius:4px}
.chain .pkt{display:block;color:var(--muted);font-size:12px}
ol.steps{list-style:none;margin:2px 0 6px;padding:0}
ol.steps li{margin:2px 0;padding:3px 6px;border-left:5px solid transparent;display:grid;
grid-template-columns:1.6em 11.5em 1fr;gap:0 6px;align-items:baseline}
ol.steps li>.mono{overflow-wrap:anywhere}
ol.steps li>.why,ol.steps li>.rw,ol.steps li>.flag{grid-column:3}
ol.steps .mark{font-weight:700}
.hit{border-left-color:var(--hit)!important;border-left-style:solid!important;background:var(--hitbg);font-weight:600}
.hit .mark{color:var(--hit)}
.miss{border-left:5px dashed #b5b5b5!important;color:var(--miss)}
.miss code{color:#3d3d3d}
.skipped{border-left:5px dotted #b5b5b5!important;color:var(--miss);font-style:italic}
.note{color:var(--muted);font-size:14px}
.why{font-size:13px;font-style:italic;font-weight:400}
.rw{font-size:13px;font-weight:700}
.decides{outline:4px double var(--ink);outline-offset:1px}
.flag{font-size:13px;font-weight:700;text-transform:uppercase;letter-spacing:.04em}
.outcome{margin:6px 0 0}
:target{scroll-margin-top:12px;box-shadow:0 0 0 3px var(--focus)}
ol.envoy{list-style:none;padding:0;margin:8px 0;display:flex;flex-wrap:wrap;gap:6px 0;align-items:stretch}
ol.envoy li{display:flex;align-items:center}
ol.envoy li+li::before{content:"\\2192";margin:0 6px;font-weight:700}
ol.envoy .box{border:2px solid var(--hit);background:var(--hitbg);border-radius:6px;padding:4px 8px;max-width:32em}
ol.envoy .box.decides{border-width:3px}
ol.envoy .kind{display:block;font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
ol.envoy .detail{display:block;font-size:13px;color:var(--muted);overflow-wrap:anywhere}
table{border-collapse:collapse;margin:6px 0 14px}
th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
th code{overflow-wrap:normal;white-space:nowrap}
.table-wrap{overflow-x:auto;max-width:100%}
.table-wrap:focus-visible{outline:3px solid var(--focus)}
td.cell{font-weight:600;min-width:8.5em}
td.cell small{display:block;font-weight:400;font-size:12px}
.c-captured{background:var(--capbg);border-left:5px solid var(--cap)}
.c-bypassed{background:var(--bypbg);border-left:5px dashed var(--byp)}
.c-dropped{background:var(--dropbg);border-left:5px double var(--drop)}
.c-looped{background:var(--loopbg);border-left:5px dotted var(--loop)}
.c-uncertain{background:var(--uncbg);border-left:5px dotted var(--unc)}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:6px}
.legend li{padding:2px 8px}
.finding{border:2px solid var(--line);border-radius:8px;padding:8px 12px;margin:0 0 12px}
.sev-error{border-color:var(--drop);border-left:8px double var(--drop)}
.sev-warning{border-color:var(--byp);border-left:8px dashed var(--byp)}
.finding .sev{font-weight:700;text-transform:uppercase}
.finding ul{margin:4px 0;padding-left:20px}
.objects li{margin:2px 0}
@media (max-width:640px){
body{padding:8px 8px 24px;font-size:14px}
.verdict .big{font-size:18px}
.hook{flex-basis:100%}
ol.steps li{grid-template-columns:1.4em 1fr}
ol.steps li>code,ol.steps li>.why,ol.steps li>.rw,ol.steps li>.flag,ol.steps li>.verb{grid-column:2}
ol.envoy{flex-direction:column}
ol.envoy li+li::before{content:"\\2193";margin:0 0 0 12px}
ol.envoy li{flex-direction:column;align-items:flex-start}
}
@media print{.skip{display:none}}
""".strip()

_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
# no script, no network, no external resource; only this stylesheet (by its hash)
CSP = f"default-src 'none'; style-src 'sha256-{_HASH}'; img-src data:; base-uri 'none'; form-action 'none'"

__all__ = ["CSP", "CSS"]
