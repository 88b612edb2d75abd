// The page's audio: a player fed with PCM chunks (through the worklet), the waveform of what was
// received, and the WAV file to download.

/** PCM16 little-endian bytes to float samples in [-1, 1). */
export function pcm16ToFloat(buffer) {
  const view = new DataView(buffer);
  const samples = new Float32Array(buffer.byteLength >> 1);
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
  return samples;
}

/** A mono 16-bit WAV file of `chunks` (ArrayBuffers of PCM16 little-endian). */
export function wavBlob(chunks, sampleRate) {
  const bytes = chunks.reduce((n, c) => n + c.byteLength, 0);
  const header = new DataView(new ArrayBuffer(44));
  const text = (offset, s) => [...s].forEach((ch, i) => header.setUint8(offset + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  header.setUint32(4, 36 + bytes, true);
  text(8, "WAVE");
  text(12, "fmt ");
  header.setUint32(16, 16, true); // fmt chunk size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, sampleRate, true);
  header.setUint32(28, sampleRate * 2, true); // bytes per second
  header.setUint16(32, 2, true); // bytes per frame
  header.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  header.setUint32(40, bytes, true);
  return new Blob([header.buffer, ...chunks], { type: "audio/wav" });
}

/** Plays float chunks as they arrive, on an AudioContext at the stream's own sample rate. */
export class Player {
  constructor(onReport) {
    this.onReport = onReport;
    this.context = null;
    this.node = null;
  }

  /** Creates (once) and resumes the context; call it from the user's click, before any await. */
  async start(sampleRate) {
    if (this.context && this.context.sampleRate !== sampleRate) {
      await this.context.close();
      this.context = null;
    }
    if (!this.context) {
      this.context = new AudioContext({ sampleRate, latencyHint: "interactive" });
      this.ready = this.context.audioWorklet.addModule(new URL("player-worklet.js", import.meta.url))
        .then(() => {
          this.node = new AudioWorkletNode(this.context, "pcm-player", { outputChannelCount: [1] });
          this.node.port.onmessage = (event) => this.onReport(event.data);
          this.node.connect(this.context.destination);
        });
    }
    await Promise.all([this.ready, this.context.resume()]);
    this.node.port.postMessage({ type: "reset" });
  }

  push(samples) {
    this.node.port.postMessage({ type: "samples", samples }, [samples.buffer]);
  }

  end() {
    this.node?.port.postMessage({ type: "end" });
  }

  stop() {
    this.node?.port.postMessage({ type: "reset" });
  }
}

/** Min-max peaks of the received samples, drawn on a canvas, with the part already played darker; scaled
 * to the loudest sample so far, so that quiet speech is visible too. */
export class Waveform {
  constructor(canvas, sampleRate) {
    this.canvas = canvas;
    this.sampleRate = sampleRate;
    this.clear();
  }

  clear() {
    this.peaks = []; // [min, max] per block of BLOCK samples
    this.block = null;
    this.count = 0;
    this.loudest = 1e-3; // below it the drawing would only magnify the quantisation noise
    this.played = 0;
    this.draw();
  }

  static BLOCK = 240; // 10 ms at 24 kHz

  add(samples) {
    for (const s of samples) {
      if (this.block === null) this.block = [s, s];
      else {
        if (s < this.block[0]) this.block[0] = s;
        if (s > this.block[1]) this.block[1] = s;
      }
      if (Math.abs(s) > this.loudest) this.loudest = Math.abs(s);
      if (++this.count % Waveform.BLOCK === 0) {
        this.peaks.push(this.block);
        this.block = null;
      }
    }
    this.schedule();
  }

  setPlayed(samples) {
    this.played = samples;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = null;
      this.draw();
    });
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, width, height);
    const style = getComputedStyle(document.documentElement);
    // The time axis holds at least 5 s, then squeezes to fit what has arrived.
    const blocks = Math.max(this.peaks.length, Math.ceil((5 * this.sampleRate) / Waveform.BLOCK));
    const perColumn = blocks / width;
    const middle = height / 2;
    const scale = (0.95 * middle) / this.loudest;
    const playedBlocks = this.played / Waveform.BLOCK;
    for (let x = 0; x < width; x++) {
      const from = Math.floor(x * perColumn);
      const to = Math.min(this.peaks.length, Math.max(from + 1, Math.floor((x + 1) * perColumn)));
      if (from >= this.peaks.length) break;
      let low = 0;
      let high = 0;
      for (let i = from; i < to; i++) {
        low = Math.min(low, this.peaks[i][0]);
        high = Math.max(high, this.peaks[i][1]);
      }
      g.fillStyle = from < playedBlocks ? style.getPropertyValue("--played") : style.getPropertyValue("--wave");
      g.fillRect(x, middle - high * scale, 1, Math.max(1, (high - low) * scale));
    }
  }
}
