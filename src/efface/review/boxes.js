// The box editor of efface's pages (the review page and the service's upload page): the boxes of one picture
// drawn in an <svg> over it, in the picture's own pixels. A click, or Tab then Space/Enter, turns a box on or off;
// a drag on the picture draws a new box; Delete removes a drawn box, the arrows move it and Shift+arrows resize it.
// Every change calls onChange(boxes); the page saves it and refreshes its preview.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const MIN_PX = 2;

export class BoxEditor {
  constructor(svg, {onChange}) {
    this.svg = svg;
    this.onChange = onChange;
    this.boxes = [];
    this.size = null;
    this.dragging = null;
    this.faintFrom = 0;  // faint candidates scoring below this are not drawn (unless turned on)
    svg.addEventListener("mousedown", (event) => this.startDrag(event));
    window.addEventListener("mousemove", (event) => this.moveDrag(event));
    window.addEventListener("mouseup", (event) => this.endDrag(event));
  }

  setPicture(width, height, boxes) {
    this.size = [width, height];
    this.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    this.setBoxes(boxes);
  }

  setBoxes(boxes) {
    this.boxes = boxes.map((box) => ({...box, xyxy: [...box.xyxy]}));
    this.draw();
  }

  showFaintFrom(score) {
    this.faintFrom = score;
    this.draw();
  }

  draw() {
    this.svg.replaceChildren();
    this.boxes.forEach((box, index) => {
      if (box.origin === "faint" && !box.is_applied && (box.score ?? 1) < this.faintFrom) return;
      const rect = document.createElementNS(SVG, "rect");
      const [x1, y1, x2, y2] = box.xyxy;
      rect.setAttribute("x", x1); rect.setAttribute("y", y1);
      rect.setAttribute("width", x2 - x1); rect.setAttribute("height", y2 - y1);
      rect.setAttribute("class", `box ${box.origin}${box.is_applied ? "" : " off"}`);
      rect.setAttribute("tabindex", "0");
      rect.setAttribute("role", "checkbox");
      rect.setAttribute("aria-checked", String(box.is_applied));
      rect.setAttribute("aria-label", `${box.origin} box${box.score == null ? "" : " score " + box.score}`);
      rect.dataset.boxId = box.box_id;
      rect.dataset.origin = box.origin;
      rect.dataset.applied = String(box.is_applied);
      if (box.is_keyframe !== undefined) rect.dataset.keyframe = String(box.is_keyframe);
      rect.addEventListener("mousedown", (event) => event.stopPropagation());
      rect.addEventListener("click", (event) => { event.stopPropagation(); this.toggle(index); });
      rect.addEventListener("keydown", (event) => this.boxKey(event, index));
      this.svg.append(rect);
    });
  }

  changed(focusIndex) {
    this.draw();
    const boxId = this.boxes[focusIndex] ? this.boxes[focusIndex].box_id : null;
    Promise.resolve(this.onChange(this.boxes)).then(() => {
      const rect = [...this.svg.children].find((child) => child.dataset.boxId === boxId)
        || this.svg.children[Math.min(focusIndex, this.svg.children.length - 1)];
      if (rect) rect.focus();
    });
  }

  toggle(index) {
    this.boxes[index].is_applied = !this.boxes[index].is_applied;
    this.changed(index);
  }

  add(xyxy) {
    this.boxes.push({box_id: "new", xyxy: this.clamp(xyxy), origin: "manual", is_applied: true, score: null});
    this.changed(this.boxes.length - 1);
  }

  addInTheMiddle() {
    if (!this.size) return;
    const [w, h] = this.size;
    const side = Math.max(8, Math.round(Math.min(w, h) / 6));
    this.add([w / 2 - side / 2, h / 2 - side / 2, w / 2 + side / 2, h / 2 + side / 2]);
  }

  boxKey(event, index) {
    const box = this.boxes[index];
    if (event.key === " " || event.key === "Enter") { event.preventDefault(); this.toggle(index); return; }
    if (box.origin !== "manual") return;
    if (event.key === "Delete" || event.key === "Backspace") {
      event.preventDefault();
      this.boxes.splice(index, 1);
      this.changed(Math.max(0, index - 1));
      return;
    }
    const step = Math.max(2, Math.round(this.size[0] / 100));
    const moves = {ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step]};
    const move = moves[event.key];
    if (!move) return;
    event.preventDefault();
    event.stopPropagation();
    let [x1, y1, x2, y2] = box.xyxy;
    if (event.shiftKey) { x2 += move[0]; y2 += move[1]; } else { x1 += move[0]; x2 += move[0]; y1 += move[1]; y2 += move[1]; }
    box.xyxy = this.clamp([x1, y1, x2, y2]);
    this.changed(index);
  }

  clamp([x1, y1, x2, y2]) {
    const [w, h] = this.size;
    x1 = Math.max(0, Math.min(x1, w - MIN_PX)); y1 = Math.max(0, Math.min(y1, h - MIN_PX));
    x2 = Math.max(x1 + MIN_PX, Math.min(x2, w)); y2 = Math.max(y1 + MIN_PX, Math.min(y2, h));
    return [x1, y1, x2, y2];
  }

  point(event) {
    const point = this.svg.createSVGPoint();
    point.x = event.clientX; point.y = event.clientY;
    return point.matrixTransform(this.svg.getScreenCTM().inverse());
  }

  startDrag(event) {
    if (!this.size || event.button !== 0) return;
    event.preventDefault();
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("class", "drawing");
    this.svg.append(rect);
    this.dragging = {start: this.point(event), rect};
  }

  moveDrag(event) {
    if (!this.dragging) return;
    const end = this.point(event);
    const {start, rect} = this.dragging;
    rect.setAttribute("x", Math.min(start.x, end.x)); rect.setAttribute("y", Math.min(start.y, end.y));
    rect.setAttribute("width", Math.abs(end.x - start.x)); rect.setAttribute("height", Math.abs(end.y - start.y));
  }

  endDrag(event) {
    if (!this.dragging) return;
    const end = this.point(event);
    const {start, rect} = this.dragging;
    this.dragging = null;
    rect.remove();
    if (Math.abs(end.x - start.x) < 3 || Math.abs(end.y - start.y) < 3) return;
    this.add([Math.min(start.x, end.x), Math.min(start.y, end.y), Math.max(start.x, end.x), Math.max(start.y, end.y)]);
  }
}

const style = document.createElement("style");
style.textContent = `
svg.boxes{position:absolute;left:0;top:0;width:100%;height:100%;cursor:crosshair}
rect.box{fill:transparent;stroke-width:3;vector-effect:non-scaling-stroke;cursor:pointer}
rect.detected{stroke:#d00000}rect.faint{stroke:#f0b400;stroke-dasharray:6 4}rect.manual{stroke:#0050d0}
rect.off{stroke-opacity:.55;stroke-dasharray:2 4}rect.box:focus{outline:none;stroke-width:5}
rect.drawing{fill:rgba(0,80,208,.15);stroke:#0050d0;stroke-width:2;vector-effect:non-scaling-stroke}`;
document.head.append(style);
