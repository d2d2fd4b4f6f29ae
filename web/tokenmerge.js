// Frontend extension of the tokenmerge node pack. Scoped to the pack's own nodes (ids start with
// "TokenMerge"); it gives them one recognisable colour so a patched model chain is easy to follow.
import { app } from "../../scripts/app.js";

const NODE_ID_PREFIX = "TokenMerge";
const NODE_COLOR = "#233";
const NODE_BGCOLOR = "#355";

app.registerExtension({
  name: "tokenmerge.core",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(NODE_ID_PREFIX)) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const result = onNodeCreated?.apply(this, arguments);
      this.color ??= NODE_COLOR;
      this.bgcolor ??= NODE_BGCOLOR;
      return result;
    };
  },
});
