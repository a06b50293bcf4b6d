"""The playground page at / in headless Chromium (Debian's `chromium`), driven over the
DevTools protocol: the page loads and lists the models, a prompt produces a picture on
janus-tiny, a chat answer streams in, inpainting with a painted mask on show-o returns an image,
and a refused request shows the server's error. A screenshot is left in $ANY2ANY_SHOT.
"""
import base64
import json
import socket
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

BASE = os.environ["ANY2ANY_BASE_URL"]
SHOWO = os.environ["ANY2ANY_SHOWO"]
EDIT_IMAGE = os.path.abspath(os.environ["ANY2ANY_EDIT_IMAGE"])
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.n = 0

    def call(self, method, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.n:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expr, what, timeout=30):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        err = self.js("document.getElementById('error').textContent")
        raise AssertionError(f"timed out waiting for {what} (page error: {err!r})")

    def set_files(self, selector, path):
        doc = self.call("DOM.getDocument")
        node = self.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector=selector)
        # (Chromium fires the input's change event itself)
        self.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[path])


def main():
    assert CHROMIUM, "chromium is not installed (apt-get install chromium)"
    profile = tempfile.mkdtemp()
    with socket.socket() as s:  # a free DevTools port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    chrome = subprocess.Popen([
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--remote-debugging-port={port}", f"--remote-allow-origins=http://127.0.0.1:{port}", "--window-size=1200,1000", BASE + "/",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = None
        # Chromium's first start on a cold machine takes ~15 s: wait up to 90 s.
        for _ in range(900):
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                if any(t["type"] == "page" for t in targets):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        pages = [t for t in targets or [] if t["type"] == "page"]
        assert pages, f"chromium exposed no page on DevTools port {port} within 90 s"
        page = Page(pages[0]["webSocketDebuggerUrl"])
        page.call("Runtime.enable")
        page.call("DOM.enable")
        run(page)
        shot = page.call("Page.captureScreenshot", format="png")
        with open(os.environ.get("ANY2ANY_SHOT", "playground.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        chrome.kill()
        chrome.wait()
        shutil.rmtree(profile, ignore_errors=True)


def run(page):
    # the page loads and lists the models
    page.wait("document.querySelectorAll('#model option').length === 2", "the model list")
    assert "janus" in page.js("document.getElementById('model').value")

    # a prompt produces a picture
    page.js("document.querySelector('[data-tab=generate]').click()")
    page.js("document.getElementById('genPrompt').value = 'a red fox'; document.getElementById('genSize').value = '16x16'")
    page.js("""window.__srcs = 0; new MutationObserver((ms) => { window.__srcs += ms.filter(m => m.attributeName === 'src').length; })
        .observe(document.getElementById('gallery'), {subtree: true, attributes: true})""")
    page.js("document.getElementById('generateBtn').click()")
    page.wait("[...document.querySelectorAll('#gallery img.generated')].some(i => i.complete && i.naturalWidth === 16)", "a generated image")
    # the three live previews came before the image
    assert page.js("window.__srcs") >= 3, page.js("window.__srcs")

    # an error is shown: janus-tiny takes only 16x16
    page.js("document.getElementById('genSize').value = '512x512'; document.getElementById('generateBtn').click()")
    err = page.wait("document.getElementById('error').style.display === 'block' && document.getElementById('error').textContent", "the error")
    assert "size" in err and "400" in err, err

    # a chat answer streams in
    page.js("document.querySelector('[data-tab=chat]').click()")
    page.js("document.getElementById('chatText').value = 'hello'; document.getElementById('chatMax').value = '5'")
    page.js("document.getElementById('send').click()")
    page.wait("(document.querySelector('#log .msg.assistant span') || {}).textContent", "a chat answer")
    assert page.js("document.getElementById('error').style.display") == "none"

    # inpainting with a painted mask on show-o
    page.js("document.querySelector('[data-tab=inpaint]').click()")
    page.js(f"document.getElementById('model').value = {json.dumps(SHOWO)}")
    page.set_files("#editImage", EDIT_IMAGE)
    page.wait("document.getElementById('base').width === 80", "the image on the canvas")
    page.js("""(() => { const m = document.getElementById('view'); const r = m.getBoundingClientRect();
        const at = (t, x, y) => m.dispatchEvent(new PointerEvent(t, {clientX: r.left + x, clientY: r.top + y, bubbles: true}));
        document.getElementById('brush').value = 64; at('pointerdown', 20, 20);
        for (let y = 20; y < 200; y += 16) for (let x = 20; x < 200; x += 8) at('pointermove', x, y);
        window.dispatchEvent(new PointerEvent('pointerup')); })()""")
    painted = page.js("(() => { const d = document.getElementById('mask').getContext('2d').getImageData(0, 0, 80, 72).data; let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] > 128; return n; })()")
    assert painted > 0, "nothing painted"
    page.js("document.getElementById('editPrompt').value = 'a red fox'; document.getElementById('editSteps').value = '2'")
    page.js("document.getElementById('editBtn').click()")
    page.wait("[...document.querySelectorAll('#editOut img')].some(i => i.complete && i.naturalWidth > 0)", "an inpainted image")
    assert page.js("document.getElementById('error').style.display") == "none", page.js("document.getElementById('error').textContent")
    print("playground: models listed, image generated with live previews, error shown, chat streamed, inpainting done: ok")


if __name__ == "__main__":
    main()
