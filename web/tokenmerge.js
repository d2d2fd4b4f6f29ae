// Frontend extension of the tokenmerge node pack, scoped to the pack's own nodes (ids start with "TokenMerge").
// - Gives them one recognisable colour, so a patched model chain is easy to follow.
// - Sets the "control after generate" of a new node's merge seed to fixed (the frontend's default for any input
//   named seed is randomize): a Run never draws other destinations unless the user asks. Loading a saved
//   workflow restores its own value afterwards (configure runs after onNodeCreated).
// - Live heatmap: while sampling runs, the server sends "tokenmerge.heatmap" events
//   ({node, step, steps, sigma, image: "data:image/png;base64,..."}); the extension draws the newest map on
//   the Token Merge Heatmap Preview node they name, on the canvas, until the node's final output arrives.
//   Events for unknown nodes or with unexpected fields are ignored; no DOM is built from server strings.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_ID_PREFIX = "TokenMerge";
const PREVIEW_NODE_ID = "TokenMergeHeatmapPreview";
const HEATMAP_EVENT = "tokenmerge.heatmap";
const PNG_DATA_URL = "data:image/png;base64,";
const NODE_COLOR = "#233";
const NODE_BGCOLOR = "#355";
const LIVE_MIN_HEIGHT = 160;
const SEED_INPUT = "seed";
const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];

function fixSeedControl(node) {
  const seed = node.widgets?.find((widget) => widget.name === SEED_INPUT);
  for (const control of seed?.linkedWidgets ?? []) {
    if (CONTROL_MODES.includes(control.value)) control.value = "fixed";
  }
}

function findNode(id) {
  const graph = app.graph;
  if (!graph || id === undefined || id === null) return null;
  return graph.getNodeById(Number(id)) ?? graph.getNodeById(String(id)) ?? null;
}

function widgetsBottom(node) {
  let bottom = globalThis.LiteGraph?.NODE_TITLE_HEIGHT ?? 30;
  for (const widget of node.widgets ?? []) {
    const y = widget.last_y ?? widget.y;
    if (typeof y === "number") bottom = Math.max(bottom, y + (globalThis.LiteGraph?.NODE_WIDGET_HEIGHT ?? 20));
  }
  return bottom + 4;
}

function onHeatmap(event) {
  const detail = event?.detail;
  if (!detail || typeof detail.image !== "string" || !detail.image.startsWith(PNG_DATA_URL)) return;
  const node = findNode(detail.node);
  if (!node || node.comfyClass !== PREVIEW_NODE_ID) return;
  const image = new Image();
  image.onload = () => {
    const frames = (node.tokenmergeLive?.frames ?? 0) + 1;
    node.tokenmergeLive = {
      image,
      frames,
      step: Number(detail.step) || 0,
      steps: Number(detail.steps) || 0,
      sigma: Number(detail.sigma) || 0,
      done: false,
    };
    const minHeight = widgetsBottom(node) + LIVE_MIN_HEIGHT;
    if (node.size[1] < minHeight) node.setSize([node.size[0], minHeight]);
    node.setDirtyCanvas?.(true, true);
    app.graph.setDirtyCanvas?.(true, true);
  };
  image.src = detail.image;
}

function drawLive(node, ctx) {
  const live = node.tokenmergeLive;
  if (!live || live.done || !live.image) return;
  const top = widgetsBottom(node);
  const label = 14;
  const width = node.size[0] - 10;
  const height = node.size[1] - top - label - 6;
  if (width <= 0 || height <= 0) return;
  const scale = Math.min(width / live.image.width, height / live.image.height);
  const w = live.image.width * scale;
  const h = live.image.height * scale;
  ctx.save();
  ctx.drawImage(live.image, (node.size[0] - w) / 2, top, w, h);
  ctx.fillStyle = "#ddd";
  ctx.font = "12px sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(`live: step ${live.step}/${live.steps}  sigma ${live.sigma.toFixed(2)}`, node.size[0] / 2, top + h + label);
  ctx.restore();
}

app.registerExtension({
  name: "tokenmerge.core",
  setup() {
    api.addEventListener(HEATMAP_EVENT, onHeatmap);
  },
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_ID_PREFIX)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.color ??= NODE_COLOR;
      this.bgcolor ??= NODE_BGCOLOR;
      fixSeedControl(this);
      return result;
    };
    if (nodeData.name !== PREVIEW_NODE_ID) return;
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      const result = onDrawForeground?.apply(this, arguments);
      drawLive(this, ctx);
      return result;
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function () {
      const result = onExecuted?.apply(this, arguments);
      if (this.tokenmergeLive) this.tokenmergeLive.done = true; // the final preview takes over
      return result;
    };
  },
});
