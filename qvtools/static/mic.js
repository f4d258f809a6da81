// qvtools microphone widgets (Recorder, LiveTalk): plain ESM for anywidget, no build step.
// Captures mono float32 PCM at the AudioContext's rate (usually 48 kHz) with a ScriptProcessorNode and
// posts each block to the kernel as a binary buffer: {type: "chunk", seq, t, rate} + [Float32Array.buffer].
// `t` is the browser's epoch time (performance.timeOrigin + performance.now(), ms) when the block reached
// the page; the kernel subtracts it (corrected by the ping clock offset) from its receive time.
const BLOCK = 4096;
const now = () => performance.timeOrigin + performance.now();

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "qv-mic";
  const label = document.createElement("b");
  label.textContent = model.get("label");
  const start = document.createElement("button");
  start.className = "qv-mic-start";
  start.textContent = "\u25CF Start";
  const stop = document.createElement("button");
  stop.className = "qv-mic-stop";
  stop.textContent = "\u25A0 Stop";
  stop.disabled = true;
  const meter = document.createElement("div");
  meter.className = "qv-mic-meter";
  const bar = document.createElement("div");
  bar.className = "qv-mic-level";
  meter.appendChild(bar);
  const clock = document.createElement("span");
  clock.className = "qv-mic-clock";
  clock.textContent = "0.0 s";
  const status = document.createElement("div");
  status.className = "qv-mic-status";
  const report = document.createElement("div");
  report.className = "qv-mic-report";
  const row = document.createElement("div");
  row.className = "qv-mic-row";
  row.append(label, start, stop, meter, clock);
  root.append(row, status, report);
  el.appendChild(root);

  let ctx = null, stream = null, proc = null, src = null, mute = null;
  let sent = 0, seq = 0, rate = 0, recording = false, playhead = 0, playCtx = null;

  const sync = () => {
    status.innerHTML = model.get("status_html");
    report.innerHTML = model.get("report_html");
  };
  model.on("change:status_html", sync);
  model.on("change:report_html", sync);
  sync();

  // clock offset: a few pings; the kernel answers "pong" and we return our receive time ("clock")
  const ping = () => model.send({ type: "ping", b_send: now() });
  for (let i = 0; i < 5; i++) setTimeout(ping, 200 * i);

  async function begin() {
    if (recording) return;
    start.disabled = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: {
        channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    } catch (err) {
      start.disabled = false;
      model.send({ type: "error", message: String(err) });
      return;
    }
    ctx = new AudioContext();
    await ctx.resume();
    rate = ctx.sampleRate;
    const cap = Math.round(model.get("max_seconds") * rate);
    sent = 0; seq = 0; recording = true;
    ping();
    model.send({ type: "start", rate, t: now() });
    src = ctx.createMediaStreamSource(stream);
    proc = ctx.createScriptProcessor(BLOCK, 1, 1);
    mute = ctx.createGain();
    mute.gain.value = 0; // the processor must reach the destination to run; keep it silent
    proc.onaudioprocess = (e) => {
      if (!recording) return;
      const t = now();
      let block = new Float32Array(e.inputBuffer.getChannelData(0));
      if (sent + block.length > cap) block = block.slice(0, Math.max(0, cap - sent));
      let sum = 0;
      for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
      const rms = Math.sqrt(sum / Math.max(1, block.length));
      const db = 20 * Math.log10(rms + 1e-9);
      bar.style.width = Math.max(0, Math.min(100, (db + 60) * 100 / 60)) + "%";
      sent += block.length;
      clock.textContent = (sent / rate).toFixed(1) + " s";
      model.send({ type: "chunk", seq: seq++, t, rate }, undefined, [block.buffer]);
      if (seq % 10 === 0) ping(); // more samples: the smallest round trip bounds the offset error
      if (sent >= cap) end("cap");
    };
    src.connect(proc); proc.connect(mute); mute.connect(ctx.destination);
    stop.disabled = false;
  }

  function end(why) {
    if (!recording) return;
    recording = false;
    try { src.disconnect(); proc.disconnect(); mute.disconnect(); } catch (e) { /* already gone */ }
    stream.getTracks().forEach((tr) => tr.stop());
    ctx.close();
    bar.style.width = "0%";
    model.send({ type: "stop", samples: sent, rate, why: why || "button", t: now() });
    stop.disabled = true;
    start.disabled = false;
  }

  function play(rateOut, buf) {
    if (!playCtx) playCtx = new AudioContext();
    const pcm = new Int16Array(buf.buffer ? buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) : buf);
    const f = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 32768;
    const ab = playCtx.createBuffer(1, f.length, rateOut);
    ab.copyToChannel(f, 0);
    const node = playCtx.createBufferSource();
    node.buffer = ab;
    node.connect(playCtx.destination);
    playhead = Math.max(playhead, playCtx.currentTime + 0.05);
    node.start(playhead);
    playhead += ab.duration;
  }

  model.on("msg:custom", (msg, buffers) => {
    if (msg.type === "pong") model.send({ type: "clock", b_send: msg.b_send, k: msg.k, b_recv: now() });
    else if (msg.type === "stop") end("kernel");
    else if (msg.type === "play" && buffers && buffers.length) play(msg.rate, buffers[0]);
  });
  start.addEventListener("click", begin);
  stop.addEventListener("click", () => end("button"));
  return () => { if (recording) end("closed"); if (playCtx) playCtx.close(); };
}

export default { render };
