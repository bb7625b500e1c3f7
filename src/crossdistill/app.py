"""`crossdistill app`: a small web page that draws the typed prompt with the one-step
Student as you type (one request per keystroke: one UNet call and one decode), and the
Teacher's image beside it on demand.

Built on the standard library's `http.server` (threaded): no web framework to install,
one HTML page, one image endpoint. Gradio or FastAPI would add tens of packages for what
is two routes; the page is plain HTML and JavaScript. Model calls are serialised by a
lock (one model, many browser requests).
"""

from __future__ import annotations

import html
import io
import json
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from .denoisers import Denoiser
from .domains import example_prompt
from .errors import CrossdistillError, first_line

MAX_PROMPT = 300   # characters

PAGE = """<!doctype html><html><head><meta charset='utf-8'><title>crossdistill: {name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}} input[type=text]{{width:32em;font-size:1.1em}}
.row{{display:flex;gap:2em;margin-top:1em}} figure{{margin:0}} img{{width:{show}px;height:{show}px;image-rendering:pixelated;
background:#eee}} #status{{color:#a00;min-height:1.2em}}</style></head><body>
<h1>{name}</h1>
<p>One-step Student: every keystroke draws the prompt ({steps} step{plural}, {res} px). {teacher_note}</p>
<input type='text' id='prompt' placeholder='{example}' autofocus> seed <input type='number' id='seed' value='0' min='0' style='width:6em'>
{teacher_button}
<div id='status'></div>
<div class='row'><figure><img id='student' alt='Student'><figcaption>Student, one step</figcaption></figure>
<figure id='tfig' style='display:none'><img id='teacher' alt='Teacher'><figcaption>Teacher ({teacher_steps} steps)</figcaption></figure></div>
<script>
const q = (model) => 'image?model=' + model + '&prompt=' + encodeURIComponent(document.getElementById('prompt').value)
  + '&seed=' + encodeURIComponent(document.getElementById('seed').value);
const student = document.getElementById('student'), status = document.getElementById('status');
function draw() {{ if (document.getElementById('prompt').value.trim()) student.src = q('student'); }}
student.onload = () => {{ status.textContent = ''; }};
student.onerror = () => {{ status.textContent = 'the Student could not draw this prompt (see the server log)'; }};
document.getElementById('prompt').addEventListener('input', draw);
document.getElementById('seed').addEventListener('input', draw);
const tb = document.getElementById('teacher-button');
if (tb) tb.addEventListener('click', () => {{ document.getElementById('tfig').style.display = '';
  document.getElementById('teacher').src = q('teacher'); }});
</script></body></html>"""


class App:
    """The models and how they draw: `image(model, prompt, seed)` -> PNG bytes."""

    def __init__(self, student: Denoiser, teacher: Denoiser | None = None, name: str = "Student"):
        self.models = {"student": student, **({"teacher": teacher} if teacher is not None else {})}
        self.name = name
        self.lock = threading.Lock()

    def image(self, model: str, prompt: str, seed: int) -> bytes:
        from PIL import Image

        from .generate import draw

        if model not in self.models:
            raise CrossdistillError(f"unknown model {model!r}; this app serves {', '.join(self.models)}")
        if not prompt.strip() or len(prompt) > MAX_PROMPT:
            raise CrossdistillError(f"the prompt must have 1..{MAX_PROMPT} characters")
        if not 0 <= seed < 2 ** 63:
            raise CrossdistillError(f"the seed must be in 0..2^63-1, got {seed}")
        den = self.models[model]
        res = den.defaults.resolution
        with self.lock:
            img = draw(den, [prompt], [seed], den.defaults.steps, den.defaults.guidance, res, res)[0]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        return buf.getvalue()

    def page(self) -> str:
        s, t = self.models["student"], self.models.get("teacher")
        dom = s.defaults.domain
        example = example_prompt(dom)
        return PAGE.format(
            name=html.escape(self.name), steps=s.defaults.steps, plural="" if s.defaults.steps == 1 else "s",
            res=s.defaults.resolution, show=max(256, s.defaults.resolution), example=example,
            teacher_note="The Teacher draws on request (many steps)." if t else "",
            teacher_button="<button id='teacher-button'>Teacher</button>" if t else "",
            teacher_steps=t.defaults.steps if t else 0)


class Server(ThreadingHTTPServer):
    """A thread per request; a listen queue for a page's burst of requests (one per keystroke)."""
    request_queue_size = 128
    daemon_threads = True


def handler(app: App):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.sent = True
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _error(self, code: int, message: str) -> None:
            self._send(code, json.dumps({"error": message}).encode(), "application/json")

        def do_GET(self) -> None:   # noqa: N802 (http.server's name)
            self.sent = False
            try:
                self._get()
            except (ConnectionError, TimeoutError):   # the browser gave up on this one (nothing to answer)
                pass
            except Exception as e:   # a bug: this request gets a 500 and the log a traceback; the server goes on
                traceback.print_exc()
                if not self.sent:
                    try:
                        self._error(500, f"internal error: {first_line(e)}")
                    except (ConnectionError, TimeoutError):
                        pass

        def _get(self) -> None:
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):
                return self._send(200, app.page().encode(), "text/html; charset=utf-8")
            if url.path != "/image":
                return self._error(404, f"not found: {url.path[:100]}; this app serves / and /image")
            try:
                args = {k: v[0] for k, v in parse_qs(url.query, errors="strict").items()}
            except UnicodeDecodeError:
                return self._error(400, "the query is not UTF-8: percent-encode the prompt's UTF-8 bytes")
            seed = args.get("seed") or "0"
            if not (seed.isascii() and seed.isdigit() and len(seed) <= 19):
                return self._error(400, f"the seed must be an integer in 0..2^63-1, got {seed[:40]!r}")
            try:
                png = app.image(args.get("model", "student"), args.get("prompt", ""), int(seed))
            except CrossdistillError as e:
                return self._error(400, str(e))
            self._send(200, png, "image/png")

        def log_message(self, fmt, *args) -> None:   # one quiet line per request on stderr
            pass

    return Handler


def default_teacher(student: str) -> str | None:
    """The Teacher an exported Student was distilled from (its crossdistill.json), if known."""
    from .artifacts import resolve
    from .denoisers.base import DEFAULTS_FILE

    info = Path(resolve(student)) / DEFAULTS_FILE
    if not info.is_file():
        return None
    return json.loads(info.read_text()).get("provenance", {}).get("teacher")


def serve(student: str, teacher: str | None = None, host: str = "127.0.0.1", port: int = 7860,
          device: str = "auto", dtype: str = "auto", ready=print) -> None:
    """Load the models and serve until interrupted; `ready(url)` once listening."""
    from .generate import load_for_inference

    den = load_for_inference(student, device, dtype)
    t = load_for_inference(teacher, device, dtype) if teacher else None
    name = Path(str(student)).name or str(student)
    try:
        server = Server((host, port), handler(App(den, t, name)))
    except OSError as e:
        raise CrossdistillError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port") from None
    ready(f"http://{host}:{server.server_address[1]}/")
    try:
        server.serve_forever()
    finally:
        server.server_close()
