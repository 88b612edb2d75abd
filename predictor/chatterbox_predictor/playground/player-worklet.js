// The audio thread's half of the player: plays the chunks it is sent back to back, sample by sample, so
// consecutive chunks join without a gap (scheduling one AudioBufferSourceNode per chunk leaves gaps and
// overlaps at the joins). It counts what it played and reports to the page about ten times a second.

const REPORT_EVERY = 2400; // samples between reports (0.1 s at 24 kHz)

class PcmPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = []; // Float32Array chunks not yet played
    this.offset = 0; // samples of queue[0] already played
    this.played = 0;
    this.starved = 0; // render quanta that found the queue empty while the stream was still coming
    this.streaming = false;
    this.sinceReport = 0;
    this.port.onmessage = (event) => this.command(event.data);
  }

  command(message) {
    if (message.type === "samples") {
      this.queue.push(message.samples);
      this.streaming = true;
    } else if (message.type === "end") {
      this.streaming = false;
      this.report(); // the page learns the end even when the queue had already run dry
    } else if (message.type === "reset") {
      this.queue = [];
      this.offset = 0;
      this.played = 0;
      this.starved = 0;
      this.streaming = false;
      this.report();
    }
  }

  buffered() {
    let total = -this.offset;
    for (const chunk of this.queue) total += chunk.length;
    return total;
  }

  report(first = false) {
    this.sinceReport = 0;
    this.port.postMessage({ type: first ? "first" : "progress", played: this.played, starved: this.starved,
      buffered: this.buffered(), drained: !this.streaming && this.queue.length === 0 });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), written);
      written += n;
      this.offset += n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, written);
    if (written < out.length && this.streaming) this.starved += 1;
    const first = this.played === 0 && written > 0;
    this.played += written;
    this.sinceReport += written;
    if (first || this.sinceReport >= REPORT_EVERY || (written && !this.queue.length)) this.report(first);
    return true; // kept alive for the page's next request
  }
}

registerProcessor("pcm-player", PcmPlayer);
