// nerfzip web viewer: the WebGL2 shaders that render a baked octree (nerfzip's octree family).
// Written for nerfzip (MIT licence). Each pixel's ray is cut into the leaf segments it crosses,
// as the Python renderer (nerfzip/rendering/octree.py) does; docs/web.md describes the textures.
"use strict";

(function () {
  const VERT = `#version 300 es
in vec2 aPos;
void main() { gl_Position = vec4(aPos, 0.0, 1.0); }`;

  // Constants of the scene, defined by the page before compiling (so that loops over them
  // unroll and the other appearance's code drops out): uDepth (levels), uMlp (1: features +
  // decoder), uK (SH coefficients per colour), uLayers (texture layers of leaf codes), uF and
  // uH (features and hidden units of the decoder), uPalette (1: leaves index a
  // palette of codes), uNdc (1: rays are mapped to NDC).
  const FRAG = `#version 300 es
precision highp float;
precision highp int;
precision highp usampler2D;
precision highp sampler2DArray;
uniform usampler2D uNodes;      // per node: (child mask, index of the first child)
uniform sampler2D uSigma;       // per leaf: density (float16)
uniform sampler2DArray uSH;     // per leaf (or palette entry): 8-bit SH codes, 4 per layer
uniform usampler2D uIndex;      // per leaf: palette entry (when uPalette == 1)
uniform sampler2D uDec;         // MLP octrees: the decoder's weights (float32)
uniform int uTexWidth;
uniform vec3 uLo;               // box corner and lattice cells per field unit
uniform vec3 uScale;
uniform vec3 uBoxLo;
uniform vec3 uBoxHi;
uniform mat3 uRot;              // c2w rotation
uniform vec3 uEye;
uniform vec4 uIntr;             // fx, fy, cx, cy (pixels of the render target)
uniform float uHeight;
uniform float uPixelOffset;
uniform float uNear;
uniform float uFar;
uniform vec4 uNdcP;             // focal, width, height, near of the NDC mapping
uniform float uStopT;
uniform float uWThresh;
uniform vec3 uBg;
uniform vec4 uStep[16];         // per channel c (uStep[c / 4][c % 4]): value = offset + step * code
uniform vec4 uOffset[16];
out vec4 outColor;

ivec2 at(int i) { return ivec2(i % uTexWidth, i / uTexWidth); }
float dec(int i) { return texelFetch(uDec, at(i), 0).r; }

uint popc8(uint x) {
  x = x - ((x >> 1) & 0x55u);
  x = (x & 0x33u) + ((x >> 2) & 0x33u);
  return (x + (x >> 4)) & 0x0Fu;
}

void shBasis(vec3 d, out float Y[16]) {
  float x = d.x, y = d.y, z = d.z;
  float xx = x * x, yy = y * y, zz = z * z;
  Y[0] = 0.28209479177387814;
  Y[1] = -0.4886025119029199 * y; Y[2] = 0.4886025119029199 * z;
  Y[3] = -0.4886025119029199 * x;
  Y[4] = 1.0925484305920792 * x * y; Y[5] = -1.0925484305920792 * y * z;
  Y[6] = 0.31539156525252005 * (3.0 * zz - 1.0); Y[7] = -1.0925484305920792 * x * z;
  Y[8] = 0.5462742152960396 * (xx - yy);
  Y[9] = -0.5900435899266435 * y * (3.0 * xx - yy); Y[10] = 2.890611442640554 * x * y * z;
  Y[11] = -0.4570457994644658 * y * (5.0 * zz - 1.0);
  Y[12] = 0.3731763325901154 * z * (5.0 * zz - 3.0);
  Y[13] = -0.4570457994644658 * x * (5.0 * zz - 1.0);
  Y[14] = 1.445305721320277 * z * (xx - yy);
  Y[15] = -0.5900435899266435 * x * (xx - 3.0 * yy);
}

void main() {
  // The ray of this pixel: pixel (u, v), row 0 at the top (nerfzip's pinhole convention).
  float u = gl_FragCoord.x - 0.5;
  float v = uHeight - gl_FragCoord.y - 0.5;
  vec3 dc = vec3((u + uPixelOffset - uIntr.z) / uIntr.x, -(v + uPixelOffset - uIntr.w) / uIntr.y,
                 -1.0);
  vec3 dir = normalize(uRot * dc);
  vec3 o = uEye;
  vec3 d = dir;
  float near = uNear, far = uFar;
  if (uNdc == 1) {  // cameras.to_ndc
    float f = uNdcP.x, W = uNdcP.y, H = uNdcP.z, n = uNdcP.w;
    float t0 = -(n + o.z) / d.z;
    o = o + t0 * d;
    o = vec3(-2.0 * f / W * o.x / o.z, -2.0 * f / H * o.y / o.z, 1.0 + 2.0 * n / o.z);
    vec3 ow = uEye + t0 * dir;
    d = vec3(-2.0 * f / W * (dir.x / dir.z - ow.x / ow.z),
             -2.0 * f / H * (dir.y / dir.z - ow.y / ow.z), -2.0 * n / ow.z);
    near = 0.0; far = 1.0;
  }
  // Range inside the box and [near, far] (slab method).
  vec3 dsafe = vec3(abs(d.x) < 1e-9 ? 1e-9 : d.x, abs(d.y) < 1e-9 ? 1e-9 : d.y,
                    abs(d.z) < 1e-9 ? 1e-9 : d.z);
  vec3 ta = (uBoxLo - o) / dsafe, tb = (uBoxHi - o) / dsafe;
  vec3 tmin = min(ta, tb), tmax = max(ta, tb);
  float tEnter = max(max(max(tmin.x, tmin.y), tmin.z), near);
  float tExit = min(min(min(tmax.x, tmax.y), tmax.z), far);
  float T = 1.0;
  vec3 rgb = vec3(0.0);
  if (tEnter < tExit) {
    float Y[16];
    shBasis(dir, Y);
    // Per layer j and colour c: the dot product weights of the 4 codes, and the constant part.
    vec4 wr[12], wg[12], wb[12];
    vec3 base = vec3(0.0);
    for (int j = 0; j < 12; j++) {
      wr[j] = vec4(0.0); wg[j] = vec4(0.0); wb[j] = vec4(0.0);
      if (j >= uLayers || uMlp == 1) continue;
      for (int q = 0; q < 4; q++) {
        int ch = 4 * j + q;
        if (ch >= 3 * uK) continue;
        int c = ch / uK;
        float y = Y[ch - c * uK];
        float w = uStep[j][q] * 255.0 * y;  // texels hold code / 255
        if (c == 0) { wr[j][q] = w; base.r += uOffset[j][q] * y; }
        else if (c == 1) { wg[j][q] = w; base.g += uOffset[j][q] * y; }
        else { wb[j][q] = w; base.b += uOffset[j][q] * y; }
      }
    }
    // MLP octrees: the view direction's part of the hidden layer, b1 + W1[:, F:] Y(d).
    float hY[64];
    int w2 = uH * (uF + 16) + uH;  // where W2 starts in the decoder's floats
    for (int j = 0; j < 64; j++) {
      if (uMlp == 0 || j >= uH) break;
      float a = dec(uH * (uF + 16) + j);
      for (int k = 0; k < 16; k++) a += dec(j * (uF + 16) + uF + k) * Y[k];
      hY[j] = a;
    }
    // Lattice units, origin moved to the box entry (float32 keeps its precision there).
    int n = 1 << uDepth;
    vec3 g0 = (o + tEnter * d - uLo) * uScale;
    vec3 dg = d * uScale;
    float norm = length(d);
    vec3 dgs = vec3(abs(dg.x) < 1e-12 ? 1e-12 : dg.x, abs(dg.y) < 1e-12 ? 1e-12 : dg.y,
                    abs(dg.z) < 1e-12 ? 1e-12 : dg.z);
    vec3 inv = 1.0 / dgs;
    float epsT = 1e-3 / max(max(abs(dg.x), abs(dg.y)), abs(dg.z));
    float t = 0.0, tEnd = tExit - tEnter;
    // path[l]: the node of level l above the previous cell (levels 0 .. known - 1): the walk
    // restarts from the deepest node the new cell shares with it, as the numba kernel does.
    int path[12];
    int known = 0;
    ivec3 prev = ivec3(0);
    for (int i = 0; i < 3 * (1 << uDepth) + 16; i++) {  // a ray crosses fewer cells
      if (t >= tEnd || T <= uStopT) break;
      vec3 p = g0 + (t + epsT) * dg;
      ivec3 cell = clamp(ivec3(floor(p)), ivec3(0), ivec3(n - 1));
      ivec3 x = cell ^ prev;
      int diff = x.x | x.y | x.z;
      int shared = uDepth - 1;  // deepest level whose node holds both cells
      for (int b = 11; b >= 0; b--) {
        if (b < uDepth && ((diff >> b) & 1) == 1) { shared = uDepth - 1 - b; break; }
      }
      int start = min(shared, known - 1);
      if (start < 0) start = 0;
      int node = start == 0 ? 0 : path[start], level = uDepth, leaf = -1;
      known = start;
      prev = cell;
      for (int l = start; l < 12; l++) {  // descend
        if (l >= uDepth) break;
        path[l] = node;
        known = l + 1;
        int bit = uDepth - 1 - l;
        uint slot = uint(((cell.x >> bit) & 1) | (((cell.y >> bit) & 1) << 1) |
                         (((cell.z >> bit) & 1) << 2));
        uvec2 nf = texelFetch(uNodes, at(node), 0).xy;
        if (((nf.x >> slot) & 1u) == 0u) { level = l + 1; break; }
        node = int(nf.y + popc8(nf.x & ((1u << slot) - 1u)));
        if (l == uDepth - 1) leaf = node;
      }
      int size = 1 << (uDepth - level);
      vec3 lo = vec3((cell / size) * size);
      vec3 bound = vec3(dg.x > 0.0 ? lo.x + float(size) : lo.x,
                        dg.y > 0.0 ? lo.y + float(size) : lo.y,
                        dg.z > 0.0 ? lo.z + float(size) : lo.z);
      vec3 tt = (bound - g0) * inv;
      float tOut = min(max(min(min(tt.x, tt.y), tt.z), t + epsT), tEnd);
      if (leaf >= 0) {
        ivec2 a = at(leaf);
        float sigma = texelFetch(uSigma, a, 0).r;
        float alpha = 1.0 - exp(-sigma * (tOut - t) * norm);
        float w = T * alpha;
        if (w > uWThresh) {
          vec3 logit = base;
          ivec2 e = uPalette == 1 ? at(int(texelFetch(uIndex, a, 0).r)) : a;
          if (uMlp == 0) {
            for (int j = 0; j < 12; j++) {
              if (j >= uLayers) break;
              vec4 code = texelFetch(uSH, ivec3(e, j), 0);
              logit += vec3(dot(code, wr[j]), dot(code, wg[j]), dot(code, wb[j]));
            }
          } else {  // sigmoid(W2 relu(W1 [f, Y(d)] + b1) + b2)
            float f[64];
            for (int j = 0; j < 16; j++) {
              if (j >= uLayers) break;
              vec4 v = uOffset[j] + uStep[j] * 255.0 * texelFetch(uSH, ivec3(e, j), 0);
              for (int q = 0; q < 4; q++) if (4 * j + q < uF) f[4 * j + q] = v[q];
            }
            logit = vec3(dec(w2 + 3 * uH), dec(w2 + 3 * uH + 1), dec(w2 + 3 * uH + 2));
            for (int j = 0; j < 64; j++) {
              if (j >= uH) break;
              float h = hY[j];
              for (int i = 0; i < 64; i++) {
                if (i >= uF) break;
                h += dec(j * (uF + 16) + i) * f[i];
              }
              h = max(h, 0.0);
              logit += h * vec3(dec(w2 + j), dec(w2 + uH + j), dec(w2 + 2 * uH + j));
            }
          }
          rgb += w / (1.0 + exp(-logit));
        }
        T *= 1.0 - alpha;
      }
      t = tOut;
    }
  }
  outColor = vec4(rgb + T * uBg, 1.0);
}`;
  window.nerfzipShaders = {
    VERT,
    fragment: (constants) => FRAG.replace("#version 300 es\n", "#version 300 es\n" +
      Object.entries(constants).map(([k, v]) => `#define ${k} ${v | 0}\n`).join("")),
  };
})();
