// nerfzip web viewer: renders a baked octree (nerfzip's octree family) with WebGL2.
// Written for nerfzip (MIT licence); no dependencies. Layout of scene.json / scene.bin.gz:
// docs/web.md. Every pixel's ray is cut into the leaf segments it crosses, as the Python
// renderer (nerfzip/rendering/octree.py) does: alpha = 1 - exp(-sigma * length), colour =
// sigmoid(sum_k c_k Y_k(d)), early termination when the transmittance drops below a threshold.
//
// URL fragment (all optional): #camera=W,H,fx,fy,cx,cy,c2w(12 numbers, row by row) pins the
// camera and the canvas size; &ui=0 hides the panel; &moving=S renders at S times the
// resolution while the camera moves (default 0.5); &first=S draws the first frame at S times
// the resolution (default: the moving one) before the full one.
"use strict";

(function () {
  const state = { ready: false, error: null, frames: 0, firstFrameMs: null, lastFrameMs: null };
  window.nerfzip = state;

  const shaders = window.nerfzipShaders;

  // --- small vector helpers ------------------------------------------------------------------
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
  const mul = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
    a[0] * b[1] - a[1] * b[0]];
  const norm = (a) => Math.sqrt(dot(a, a));
  const unit = (a) => mul(a, 1 / Math.max(norm(a), 1e-12));

  function lookAt(eye, target, up) {  // c2w rows (3 x 4), camera looks down -z
    const z = unit(sub(eye, target));
    let x = cross(up, z);
    if (norm(x) < 1e-9) x = cross([1, 0, 0], z);
    x = unit(x);
    const y = cross(z, x);
    return [[x[0], y[0], z[0], eye[0]], [x[1], y[1], z[1], eye[1]], [x[2], y[2], z[2], eye[2]]];
  }

  function showError(msg) {
    state.error = msg;
    document.getElementById("error").textContent = "nerfzip: " + msg;
    const panel = document.getElementById("panel");
    if (panel) panel.classList.add("hidden");
  }

  function parseHash() {
    const out = {};
    for (const part of location.hash.replace(/^#/, "").split("&")) {
      if (!part) continue;
      const i = part.indexOf("=");
      out[decodeURIComponent(i < 0 ? part : part.slice(0, i))] =
        i < 0 ? "" : decodeURIComponent(part.slice(i + 1));
    }
    return out;
  }

  function cameraFromText(text) {
    const v = text.split(",").map(Number);
    if (v.length !== 18 || v.some((x) => !Number.isFinite(x))) {
      throw new Error("#camera= needs 18 numbers: width,height,fx,fy,cx,cy,c2w (12, by rows)");
    }
    return { width: v[0], height: v[1], fx: v[2], fy: v[3], cx: v[4], cy: v[5],
      c2w: [v.slice(6, 10), v.slice(10, 14), v.slice(14, 18)] };
  }

  function cameraText(cam) {
    const nums = [cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy,
      ...cam.c2w[0], ...cam.c2w[1], ...cam.c2w[2]];
    return nums.map((x) => +x.toPrecision(7)).join(",");
  }

  async function fetchBytes(url) {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
    let buf = new Uint8Array(await res.arrayBuffer());
    if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {  // still gzip: unpack here
      if (typeof DecompressionStream === "undefined") {
        throw new Error("this browser cannot decompress gzip (DecompressionStream)");
      }
      const stream = new Blob([buf]).stream().pipeThrough(new DecompressionStream("gzip"));
      buf = new Uint8Array(await new Response(stream).arrayBuffer());
    }
    return buf;
  }

  function section(meta, bytes, name) {
    const s = meta.data.sections.find((x) => x.name === name);
    if (!s || s.offset + s.length > bytes.byteLength) throw new Error(`scene data: no ${name}`);
    return { s, view: bytes.subarray(s.offset, s.offset + s.length) };
  }

  // --- textures ------------------------------------------------------------------------------
  function texSize(count, width) {
    return [width, Math.max(1, Math.ceil(count / width))];
  }

  function makeTexture(gl, target) {
    const tex = gl.createTexture();
    gl.bindTexture(target, tex);
    gl.texParameteri(target, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(target, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
    gl.texParameteri(target, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
    gl.texParameteri(target, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
    return tex;
  }

  function uploadOctree(gl, meta, bytes, width) {
    const depth = meta.depth, nodes = meta.nodes, leaves = meta.leaves;
    const masks = section(meta, bytes, "masks").view;
    // Pointers from the masks (fields/octree.py, OctreeStructure.from_masks).
    const [nw, nh] = texSize(nodes, width);
    const nodeData = new Uint32Array(nw * nh * 2);
    const pop = new Uint8Array(256);
    for (let i = 0; i < 256; i++) pop[i] = (i & 1) + pop[i >> 1];
    let start = 0, size = 1;
    for (let l = 0; l < depth; l++) {
      if (start + size > nodes) throw new Error("scene data: masks describe too many nodes");
      const next = start + size;
      let first = l < depth - 1 ? next : 0;
      for (let i = start; i < next; i++) {
        nodeData[2 * i] = masks[i];
        nodeData[2 * i + 1] = first;
        first += pop[masks[i]];
      }
      size = first - (l < depth - 1 ? next : 0);
      start = next;
    }
    if (start !== nodes || size !== leaves) throw new Error("scene data: masks do not match");
    const units = {};
    units.nodes = makeTexture(gl, gl.TEXTURE_2D);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RG32UI, nw, nh, 0, gl.RG_INTEGER, gl.UNSIGNED_INT,
      nodeData);
    const [lw, lh] = texSize(leaves, width);
    const sig = section(meta, bytes, "sigma");
    units.sigma = makeTexture(gl, gl.TEXTURE_2D);
    if (sig.s.dtype === "uint8") {  // 8-bit codes of log density; 0: no density
      const sigma = new Float32Array(lw * lh);
      const lo = sig.s.log_offset, st = sig.s.log_step;
      for (let i = 0; i < leaves; i++) {
        const c = sig.view[i];
        sigma[i] = c === 0 ? 0 : Math.exp(lo + st * (c - 1));
      }
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, lw, lh, 0, gl.RED, gl.FLOAT, sigma);
    } else {
      const sigma = new Uint16Array(lw * lh);
      sigma.set(new Uint16Array(sig.view.buffer, sig.view.byteOffset, leaves));
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.R16F, lw, lh, 0, gl.RED, gl.HALF_FLOAT, sigma);
    }
    // SH codes per leaf, or a palette and an index per leaf.
    const name = meta.appearance === "mlp" ? "features" : "sh";
    const palette = meta.data.sections.some((x) => x.name === name + "_palette");
    const sh = section(meta, bytes, palette ? name + "_palette" : name);
    const channels = sh.s.shape[0], entries = sh.s.shape[1];
    const [pw, ph] = texSize(entries, width);
    const layers = Math.ceil(channels / 4);
    const texels = pw * ph;
    const codes = new Uint8Array(texels * 4 * layers);
    for (let c = 0; c < channels; c++) {  // channel-major on the wire -> RGBA layers
      const src = sh.view.subarray(c * entries, (c + 1) * entries);
      const base = Math.floor(c / 4) * texels * 4 + (c % 4);
      for (let i = 0; i < entries; i++) codes[base + 4 * i] = src[i];
    }
    units.sh = makeTexture(gl, gl.TEXTURE_2D_ARRAY);
    gl.texImage3D(gl.TEXTURE_2D_ARRAY, 0, gl.RGBA8, pw, ph, layers, 0, gl.RGBA,
      gl.UNSIGNED_BYTE, codes);
    units.index = makeTexture(gl, gl.TEXTURE_2D);
    const index = new Uint16Array(palette ? lw * lh : 1);
    if (palette) {
      const ix = section(meta, bytes, name + "_index");
      index.set(ix.s.dtype === "uint8" ? ix.view
        : new Uint16Array(ix.view.buffer, ix.view.byteOffset, leaves));
    }
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.R16UI, palette ? lw : 1, palette ? lh : 1, 0,
      gl.RED_INTEGER, gl.UNSIGNED_SHORT, index);
    units.palette = palette;
    // MLP octrees: the decoder's floats (a 1 x 1 placeholder otherwise).
    units.dec = makeTexture(gl, gl.TEXTURE_2D);
    let floats = new Float32Array(1);
    if (meta.appearance === "mlp") {
      const d = section(meta, bytes, "decoder");
      floats = new Float32Array(d.view.buffer, d.view.byteOffset, d.s.shape[0]);
    }
    const [dw, dh] = texSize(floats.length, width);
    const decoder = new Float32Array(dw * dh);
    decoder.set(floats);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.R32F, dw, dh, 0, gl.RED, gl.FLOAT, decoder);
    return { units, channels, layers, step: sh.s.value_step, offset: sh.s.value_offset };
  }

  function compile(gl, type, src) {
    const s = gl.createShader(type);
    gl.shaderSource(s, src);
    gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) {
      throw new Error("shader: " + gl.getShaderInfoLog(s));
    }
    return s;
  }

  function program(gl, constants) {
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl, gl.VERTEX_SHADER, shaders.VERT));
    gl.attachShader(p, compile(gl, gl.FRAGMENT_SHADER, shaders.fragment(constants)));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) {
      throw new Error("shader link: " + gl.getProgramInfoLog(p));
    }
    return p;
  }

  // --- the viewer ----------------------------------------------------------------------------
  async function main() {
    const t0 = performance.now();
    const hash = parseHash();
    const canvas = document.getElementById("view");
    const gl = canvas.getContext("webgl2", { antialias: false, alpha: false,
      preserveDrawingBuffer: true, depth: false });
    if (!gl) throw new Error("this browser has no WebGL2");
    if (location.protocol === "file:") {
      throw new Error("open this page over HTTP: python -m http.server -d FOLDER 8000");
    }
    const res = await fetch("scene.json");
    if (!res.ok) throw new Error(`scene.json: HTTP ${res.status}`);
    const meta = await res.json();
    if (meta.format !== "nerfzip-web" || meta.version !== 1) {
      throw new Error("scene.json: not a nerfzip-web scene of version 1");
    }
    const bytes = await fetchBytes(meta.data.file);
    const width = Math.min(4096, gl.getParameter(gl.MAX_TEXTURE_SIZE));
    const tree = uploadOctree(gl, meta, bytes, width);
    const mlp = meta.appearance === "mlp";
    const prog = program(gl, {
      uDepth: meta.depth, uMlp: mlp ? 1 : 0, uK: mlp ? 1 : (meta.sh_degree + 1) ** 2,
      uLayers: tree.layers, uF: mlp ? meta.decoder.features : 0,
      uH: mlp ? meta.decoder.hidden : 0, uPalette: tree.units.palette ? 1 : 0,
      uNdc: meta.ndc ? 1 : 0,
    });
    gl.useProgram(prog);
    const buf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 3, -1, -1, 3]), gl.STATIC_DRAW);
    const loc = gl.getAttribLocation(prog, "aPos");
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, 2, gl.FLOAT, false, 0, 0);
    const U = (name) => gl.getUniformLocation(prog, name);
    [["uNodes", tree.units.nodes, gl.TEXTURE_2D], ["uSigma", tree.units.sigma, gl.TEXTURE_2D],
      ["uSH", tree.units.sh, gl.TEXTURE_2D_ARRAY],
      ["uIndex", tree.units.index, gl.TEXTURE_2D],
      ["uDec", tree.units.dec, gl.TEXTURE_2D]].forEach(([name, tex, target], i) => {
      gl.activeTexture(gl.TEXTURE0 + i);
      gl.bindTexture(target, tex);
      gl.uniform1i(U(name), i);
    });
    const lo = meta.aabb[0], hi = meta.aabb[1], n = 2 ** meta.depth;
    gl.uniform1i(U("uTexWidth"), width);
    gl.uniform3fv(U("uLo"), lo);
    gl.uniform3fv(U("uScale"), [0, 1, 2].map((a) => n / (hi[a] - lo[a])));
    gl.uniform3fv(U("uBoxLo"), lo);
    gl.uniform3fv(U("uBoxHi"), hi);
    gl.uniform1f(U("uPixelOffset"), meta.pixel_offset);
    gl.uniform1f(U("uNear"), meta.near);
    gl.uniform1f(U("uFar"), meta.far);
    if (meta.ndc) {
      gl.uniform4f(U("uNdcP"), meta.ndc.focal, meta.ndc.width, meta.ndc.height, meta.ndc.near);
    }
    gl.uniform1f(U("uStopT"), meta.stop_transmittance);
    gl.uniform1f(U("uWThresh"), meta.weight_threshold);
    gl.uniform3fv(U("uBg"), meta.background);
    const step = new Float32Array(64), offset = new Float32Array(64);
    step.set(tree.step);
    offset.set(tree.offset);
    gl.uniform4fv(U("uStep"), step);
    gl.uniform4fv(U("uOffset"), offset);

    // Camera: pinned by the URL (canvas at its size) or the scene's first view fitted to the
    // window; the orbit turns it around the scene's target.
    const pinned = hash.camera !== undefined;
    let cam = pinned ? cameraFromText(hash.camera) : meta.camera;
    const moving = hash.moving !== undefined ? Number(hash.moving) : 0.5;
    if (pinned) canvas.classList.add("pinned");
    const target = meta.orbit.target, up = unit(meta.orbit.up);
    state.target = target;
    const eye0 = [cam.c2w[0][3], cam.c2w[1][3], cam.c2w[2][3]];
    let radius = norm(sub(eye0, target));
    // Spherical angles of the eye around the target, in a frame whose third axis is ``up``.
    let ax = cross(up, [1, 0, 0]);
    if (norm(ax) < 1e-6) ax = cross(up, [0, 1, 0]);
    ax = unit(ax);
    const ay = cross(up, ax);
    const rel = unit(sub(eye0, target));
    let azimuth = Math.atan2(dot(rel, ay), dot(rel, ax));
    let elevation = Math.asin(Math.max(-1, Math.min(1, dot(rel, up))));
    let c2w = cam.c2w;
    function orbitC2w() {
      const ce = Math.cos(elevation);
      const dir = add(add(mul(ax, ce * Math.cos(azimuth)), mul(ay, ce * Math.sin(azimuth))),
        mul(up, Math.sin(elevation)));
      return lookAt(add(target, mul(dir, radius)), target, up);
    }

    function targetSize(scale) {
      if (pinned) return [Math.round(cam.width * scale), Math.round(cam.height * scale)];
      const dpr = Math.min(window.devicePixelRatio || 1, 2);  // sharper costs 4x per step
      return [Math.max(1, Math.round(canvas.clientWidth * dpr * scale)),
        Math.max(1, Math.round(canvas.clientHeight * dpr * scale))];
    }

    function draw(scale, wait = true) {
      const [w, h] = targetSize(scale);
      if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
      if (pinned && scale === 1) {
        canvas.style.width = cam.width + "px";
        canvas.style.height = cam.height + "px";
      }
      // Intrinsics: the camera's, scaled to this target; unpinned, the camera's vertical field
      // of view fitted to the window.
      let fx, fy, cx, cy;
      if (pinned) {
        const sx = w / cam.width, sy = h / cam.height;
        fx = cam.fx * sx; fy = cam.fy * sy; cx = cam.cx * sx; cy = cam.cy * sy;
      } else {
        fy = cam.fy * h / cam.height; fx = fy * cam.fx / cam.fy; cx = w / 2; cy = h / 2;
      }
      gl.viewport(0, 0, w, h);
      const r = c2w;
      gl.uniformMatrix3fv(U("uRot"), false, [r[0][0], r[1][0], r[2][0], r[0][1], r[1][1],
        r[2][1], r[0][2], r[1][2], r[2][2]]);
      gl.uniform3f(U("uEye"), r[0][3], r[1][3], r[2][3]);
      gl.uniform4f(U("uIntr"), fx, fy, cx, cy);
      gl.uniform1f(U("uHeight"), h);
      const start = performance.now();
      gl.drawArrays(gl.TRIANGLES, 0, 3);
      state.frames += 1;
      if (!wait) { gl.flush(); return; }  // interactive frames: no stall of the page
      const px = new Uint8Array(4);
      gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);  // waits for the frame
      state.lastFrameMs = performance.now() - start;
    }

    // Draws ``n`` frames at ``scale`` of the resolution; the milliseconds of each (benchmarks).
    state.timeFrames = (n, scale) => {
      const out = [];
      for (let i = 0; i < n; i++) { draw(scale || 1); out.push(state.lastFrameMs); }
      return out;
    };

    // Renders the current view at full resolution and returns its pixels, rows from the top:
    // what tests compare with the Python renderer.
    state.readPixels = () => {
      draw(1);
      const w = canvas.width, h = canvas.height;
      const px = new Uint8Array(w * h * 4);
      gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, px);
      const rows = new Uint8Array(w * h * 3);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const s = 4 * ((h - 1 - y) * w + x), d = 3 * (y * w + x);
          rows[d] = px[s]; rows[d + 1] = px[s + 1]; rows[d + 2] = px[s + 2];
        }
      }
      let bin = "";
      for (let i = 0; i < rows.length; i += 8192) {
        bin += String.fromCharCode.apply(null, rows.subarray(i, i + 8192));
      }
      return { width: w, height: h, rgb: btoa(bin) };
    };

    let pending = null, idle = null;
    function request(scale) {
      if (pending) cancelAnimationFrame(pending);
      pending = requestAnimationFrame(() => { pending = null; draw(scale, false); });
    }
    function moved() {
      c2w = orbitC2w();
      cam = { ...cam, c2w };
      request(moving);
      clearTimeout(idle);
      idle = setTimeout(() => {
        request(1);
        const keep = location.hash.replace(/^#/, "").split("&")
          .filter((p) => p && !p.startsWith("camera="));
        history.replaceState(null, "", "#" + [...keep, "camera=" + state.camera()].join("&"));
      }, 250);
    }
    // The current camera in the #camera= form (intrinsics of the full-resolution target).
    state.camera = () => cameraText(pinned ? cam : { ...cam, ...intrinsicsNow() });
    function intrinsicsNow() {
      const [w, h] = targetSize(1);
      const fy = cam.fy * h / cam.height;
      return { width: w, height: h, fy, fx: fy * cam.fx / cam.fy, cx: w / 2, cy: h / 2 };
    }

    // Mouse / touch orbit: drag turns, wheel / pinch zooms.
    const pointers = new Map();
    let pinch = null;
    canvas.addEventListener("pointerdown", (e) => {
      canvas.setPointerCapture(e.pointerId);
      pointers.set(e.pointerId, [e.clientX, e.clientY]);
    });
    const release = (e) => { pointers.delete(e.pointerId); pinch = null; };
    canvas.addEventListener("pointerup", release);
    canvas.addEventListener("pointercancel", release);
    canvas.addEventListener("pointermove", (e) => {
      if (!pointers.has(e.pointerId)) return;
      const [px, py] = pointers.get(e.pointerId);
      pointers.set(e.pointerId, [e.clientX, e.clientY]);
      if (pointers.size === 1) {
        azimuth -= (e.clientX - px) * 0.008;
        elevation = Math.max(-1.55, Math.min(1.55, elevation + (e.clientY - py) * 0.008));
      } else if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const dist = Math.hypot(a[0] - b[0], a[1] - b[1]);
        if (pinch) radius *= pinch / Math.max(dist, 1);
        pinch = dist;
      }
      moved();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      radius *= Math.exp(e.deltaY * 0.001);
      moved();
    }, { passive: false });
    window.addEventListener("resize", () => { if (!pinned) request(1); });

    // The first frame at the moving resolution (scene on screen sooner), then the full one.
    const first = hash.first !== undefined ? Number(hash.first) : moving;
    draw(first);
    state.firstFrameMs = performance.now() - t0;
    state.loadToFirstFrameMs = performance.now();  // since the navigation started
    state.ready = true;
    setTimeout(() => {
      if (first !== 1) draw(1);
      state.loadToFullFrameMs = performance.now();
      state.refined = true;
    }, 0);
    const panel = document.getElementById("panel");
    if (hash.ui === "0") panel.classList.add("hidden");
    const src = meta.source || {};
    panel.textContent = [
      `${src.file || "scene"}${src.bytes ? ` (${src.bytes.toLocaleString()} bytes)` : ""}`,
      `octree depth ${meta.depth}: ${meta.leaves.toLocaleString()} leaves, ` +
        (meta.appearance === "mlp" ? `${meta.decoder.features} features + MLP`
          : `SH degree ${meta.sh_degree}`) +
        `; page data ${meta.data.bytes.toLocaleString()} bytes`,
      src.pipeline ? `pipeline: ${src.pipeline}` : "",
      `first frame after ${state.firstFrameMs.toFixed(0)} ms (${state.lastFrameMs.toFixed(0)} ` +
        "ms to draw); drag to orbit, wheel or pinch to zoom",
    ].filter(Boolean).join("\n");
  }

  main().catch((e) => showError(e.message || String(e)));
})();
