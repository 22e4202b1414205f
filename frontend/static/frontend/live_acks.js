// Flow control of ws/experiments/<id>/ (controlplane/metrics/consumers.py, "Flow control"):
// every live message carries "seq" and "key"; the page acknowledges what it has processed, so
// the server, which closes a socket with 4008 once 1,000 messages or 1 MiB are unacknowledged,
// closes only a page that really stopped (then the page reconnects to a fresh history).

/** Acknowledge after this many messages, this many characters, or this long (whichever
 * first): far below the server's bounds; the time only ends a quiet stream's tail (each ack
 * costs the server about what a few sent messages do, so not every second). */
export const ACK_EVERY = 100;
export const ACK_CHARS = 128 * 1024;
export const ACK_AFTER_MS = 5000;

/** The acknowledgements of one socket: call note() once a message has been processed. */
export class Acks {
  constructor(socket) {
    this.socket = socket;
    this.last = null; // {seq, key} of the last processed message not yet acknowledged
    this.count = 0;
    this.chars = 0;
    this.timer = null;
  }

  /** ``message`` (parsed) of ``size`` characters was processed. */
  note(message, size) {
    if (typeof message.seq !== "number") return; // the history carries none
    this.last = { seq: message.seq, key: message.key };
    this.count += 1;
    this.chars += size;
    if (this.count >= ACK_EVERY || this.chars >= ACK_CHARS) this.send();
    else if (this.timer === null) this.timer = setTimeout(() => this.send(), ACK_AFTER_MS);
  }

  send() {
    this.stop();
    if (this.last === null || this.socket.readyState !== WebSocket.OPEN) return;
    this.socket.send(JSON.stringify({ type: "ack", seq: this.last.seq, key: this.last.key }));
    this.last = null;
    this.count = 0;
    this.chars = 0;
  }

  /** The socket closed: nothing more to send. */
  stop() {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
