"""The official `openai` Python client against `any2any serve` on the tiny fixtures:
chat, streaming, image input, images.generate and images.edit (the README's examples).

Run by run_openai_client.sh, which builds a venv from requirements.txt and starts the server;
the server's base URL is in ANY2ANY_BASE_URL.
"""
import base64
import io
import os
import struct
import sys
import zlib

import openai

BASE = os.environ["ANY2ANY_BASE_URL"]
JANUS = os.environ["ANY2ANY_JANUS"]
SHOWO = os.environ["ANY2ANY_SHOWO"]
client = openai.OpenAI(base_url=BASE + "/v1", api_key="test-key")


def png_rgba(w, h, pixel):
    """A PNG of w×h RGBA pixels, pixel(x, y) -> (r, g, b, a)."""
    raw = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(w)) for y in range(h))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    return struct.unpack(">II", data[16:24])


def test_models():
    ids = {m.id: m for m in client.models.list().data}
    assert JANUS in ids and SHOWO in ids, ids
    assert ids[JANUS].model_extra["capabilities"] == ["text", "image_in", "image_out"]


def test_chat_and_seed():
    kw = dict(model=JANUS, messages=[{"role": "user", "content": "hello"}], max_tokens=6, seed=7, temperature=1.0)
    a = client.chat.completions.create(**kw)
    b = client.chat.completions.create(**kw)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.role == "assistant"
    assert a.usage.completion_tokens == 6 and a.usage.total_tokens > 6
    assert a.choices[0].finish_reason == "length"
    return a.choices[0].message.content


def test_streaming(full):
    stream = client.chat.completions.create(
        model=JANUS, messages=[{"role": "user", "content": "hello"}], max_tokens=6, seed=7, temperature=1.0,
        stream=True, stream_options={"include_usage": True})
    text, usage, chunks = "", None, 0
    for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
    assert text == full, (text, full)
    assert usage is not None and usage.completion_tokens == 6
    assert chunks >= 4, chunks


def test_image_input():
    with open(os.environ["ANY2ANY_IMAGE"], "rb") as f:
        data = base64.b64encode(f.read()).decode()
    r = client.chat.completions.create(model=JANUS, max_tokens=4, messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}},
        {"type": "text", "text": "what is this?"}]}])
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens >= 16


def test_images_generate():
    r = client.images.generate(model=JANUS, prompt="a red fox", n=2, size="16x16", response_format="b64_json",
                               extra_body={"seed": 3, "guidance_scale": 2.0})
    imgs = [base64.b64decode(d.b64_json) for d in r.data]
    assert len(imgs) == 2 and all(png_size(i) == (16, 16) for i in imgs)
    again = client.images.generate(model=JANUS, prompt="a red fox", n=2, size="16x16", extra_body={"seed": 3, "guidance_scale": 2.0})
    assert [base64.b64decode(d.b64_json) for d in again.data] == imgs
    u = client.images.generate(model=JANUS, prompt="a red fox", response_format="url", extra_body={"seed": 3})
    assert u.data[0].url.startswith(BASE), u.data[0].url


def test_images_stream():
    events = list(client.images.generate(model=JANUS, prompt="a red fox", size="16x16", stream=True, partial_images=2,
                                         extra_body={"seed": 3}))
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], kinds
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    assert png_size(base64.b64decode(events[-1].b64_json)) == (16, 16)


def test_images_edit():
    with open(os.environ["ANY2ANY_EDIT_IMAGE"], "rb") as f:
        image = f.read()
    w, h = png_size(image)
    mask = png_rgba(w, h, lambda x, y: (0, 0, 0, 0 if x >= w // 2 else 255))
    r = client.images.edit(model=SHOWO, image=("image.png", image, "image/png"), mask=("mask.png", mask, "image/png"),
                           prompt="a red fox", extra_body={"seed": 4, "steps": 3})
    out = base64.b64decode(r.data[0].b64_json)
    assert png_size(out)[0] > 0


def test_errors():
    try:
        client.chat.completions.create(model=JANUS, messages=[{"role": "user", "content": "x"}], temperature=5)
    except openai.BadRequestError as e:
        assert e.body["param"] == "temperature", e.body
    else:
        raise AssertionError("temperature 5 was accepted")
    try:
        client.images.generate(model=JANUS, prompt="x", size="1024x1024")
    except openai.BadRequestError as e:
        assert e.body["param"] == "size", e.body
    else:
        raise AssertionError("size 1024x1024 was accepted on janus-tiny")


if __name__ == "__main__":
    test_models()
    full = test_chat_and_seed()
    test_streaming(full)
    test_image_input()
    test_images_generate()
    test_images_stream()
    test_images_edit()
    test_errors()
    print(f"openai {openai.__version__}: chat, streaming, image input, images.generate (streamed too), images.edit, errors: ok")
