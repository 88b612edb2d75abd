// The server's API as the page uses it: the key, JSON and multipart calls, and speech over the WebSocket.
// Every address is relative to the page's own, so the page works behind a path prefix too.

const KEY_STORAGE = "chatterbox.apiKey";
const base = new URL(".", window.location.href); // the page is <base>playground

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The sentence an error response carries: our `detail` (a string, or FastAPI's list of problems). */
async function problem(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (a proxy's page): the status says it
  }
  const detail = body?.detail ?? body?.error;
  if (Array.isArray(detail)) {
    return detail.map((p) => `${(p.loc || []).filter((part) => part !== "body").join(".")}: ${p.msg}`)
      .join("; ");
  }
  return typeof detail === "string" ? detail : `the server answered ${response.status}`;
}

export const key = {
  get: () => sessionStorage.getItem(KEY_STORAGE) || "",
  set: (value) => sessionStorage.setItem(KEY_STORAGE, value),
  forget: () => sessionStorage.removeItem(KEY_STORAGE),
};

async function call(path, { method = "GET", body, apiKey = key.get(), query } = {}) {
  const url = new URL(path, base);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = apiKey ? { "X-API-Key": apiKey } : {};
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, { method, headers, body });
  } catch (error) {
    throw new ApiError(0, `the server cannot be reached (${error.message})`);
  }
  if (!response.ok) throw new ApiError(response.status, await problem(response));
  return response.json();
}

export const api = {
  config: () => call("playground/config"),
  schema: () => call("openapi.json"),
  health: () => call("health"),
  /** Voice ids (without .pth), with `apiKey` rather than the stored key when given. */
  voices: async (apiKey) => (await call("voices", { apiKey })).map((name) => name.replace(/\.pth$/, "")),
  upload(file, voiceId, overwrite) {
    const form = new FormData();
    form.append("file", file, file.name);
    return call("voices", { method: "POST", body: form, query: { voice_id: voiceId, overwrite } });
  },
  clone(files, voiceId, overwrite) {
    const form = new FormData();
    for (const file of files) form.append("audio", file, file.name);
    return call("voices/clone", { method: "POST", body: form, query: { voice_id: voiceId, overwrite } });
  },
  remove: (voiceId) => call(`voices/${encodeURIComponent(voiceId)}`, { method: "DELETE" }),
};

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Speaks `message` ({text, voice_id, options...}) over `/tts/stream`. The key travels as a WebSocket
 * subprotocol, never in the address. Calls `on.start(sampleRate)`, `on.audio(ArrayBuffer)`,
 * `on.error(message)` and `on.end()`; returns a function that stops the speech (the server cancels it).
 */
export function speak(message, on) {
  const url = new URL("tts/stream", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const protocols = ["chatterbox.tts"];
  if (key.get()) protocols.push(`chatterbox.key.${base64url(key.get())}`);
  const socket = new WebSocket(url, protocols);
  socket.binaryType = "arraybuffer";
  let finished = false;
  const finish = (error) => {
    if (finished) return;
    finished = true;
    if (error) on.error(error);
    on.end();
  };
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return on.audio(event.data);
    const reply = JSON.parse(event.data);
    if (reply.type === "start") {
      on.start(reply.sample_rate);
      socket.send(JSON.stringify(message));
      socket.send(JSON.stringify({ type: "end" }));
    } else if (reply.type === "error") {
      finish(reply.detail);
      socket.close();
    } else if (reply.type === "end") {
      finish();
    }
  };
  socket.onclose = (event) => {
    // Refused before the handshake (a key the server no longer takes) closes without a start message.
    if (!finished) finish(event.code === 1000 ? undefined : "the connection closed before the end of the "
      + "speech (is the key still valid, is the server up?)");
  };
  return () => {
    finished = true;
    socket.close();
  };
}
