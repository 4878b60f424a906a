// Kolors Studio's page script: the visitor's history (full images in IndexedDB, never on the server), their
// last settings per tab (localStorage), Ctrl+Enter to generate, and small toasts for what happens here.
(() => {
  "use strict";
  if (window.kolorsStudio) return;
  const DB_NAME = "kolors-studio";
  const STORE = "entries";
  const SETTINGS_KEY = "kolors-studio-settings";
  const MAX_ENTRIES = 1000;
  const MAX_IMPORT_BYTES = 512 * 1024 * 1024;
  const THUMB = 256;
  const EXPORT_FORMAT = "kolors-studio-history";
  const ID = /^[A-Za-z0-9_-]{1,64}$/;
  const zh = (navigator.language || "").toLowerCase().startsWith("zh");
  const T = zh ? {
    search: "搜索提示词、种子、采样器", del: "删除所选", clear: "清空历史", exp: "导出 JSON", imp: "导入 JSON",
    count: (n) => `共 ${n} 条`, empty: "还没有记录。生成的每张图片都会保存在这里（仅本浏览器）。",
    none: "先点击一条记录。", confirmClear: (n) => `删除本浏览器中的全部 ${n} 条记录？此操作无法撤销。`,
    cleared: "历史已清空。", deleted: "已删除一条记录。", exported: (n) => `已导出 ${n} 条记录。`,
    imported: (n) => `已导入 ${n} 条记录。`, badFile: (why) => `无法导入此文件：${why}`,
    saved: (n) => `已保存到历史记录（${n} 张）。`, full: "浏览器存储已满：已删除最早的记录。",
    open: "打开原图", download: "下载", seed: "种子", noStore: "此浏览器无法保存历史（IndexedDB 不可用）。",
    tooBig: "文件过大", notOurs: "不是可图工作室的历史文件", noEntries: "没有有效的记录",
    init: "初始图片", reference: "参考图片", modes: {text_to_image: "文生图", image_to_image: "图生图", ip_adapter: "参考图"},
  } : {
    search: "Search prompts, seeds, samplers", del: "Delete selected", clear: "Clear history", exp: "Export JSON",
    imp: "Import JSON", count: (n) => `${n} entries`,
    empty: "Nothing yet. Every image you generate is kept here (in this browser only).",
    none: "Click an entry first.", confirmClear: (n) => `Delete all ${n} entries from this browser? This cannot be undone.`,
    cleared: "History cleared.", deleted: "Entry deleted.", exported: (n) => `Exported ${n} entries.`,
    imported: (n) => `Imported ${n} entries.`, badFile: (why) => `This file cannot be imported: ${why}`,
    saved: (n) => `Saved to the history (${n}).`, full: "The browser's storage is full: the oldest entries were removed.",
    open: "Open full image", download: "Download", seed: "seed", noStore: "This browser cannot keep a history (no IndexedDB).",
    tooBig: "it is too large", notOurs: "it is not a Kolors Studio history file", noEntries: "it holds no valid entries",
    init: "Init image", reference: "Reference image", modes: {text_to_image: "Text to image", image_to_image: "Image to image", ip_adapter: "IP-Adapter"},
  };

  // --- toasts ---
  function toast(text, kind = "info") {
    let box = document.getElementById("kolors-toasts");
    if (!box) {
      box = document.createElement("div");
      box.id = "kolors-toasts";
      document.body.appendChild(box);
    }
    const item = document.createElement("div");
    item.className = `kolors-toast kolors-toast-${kind}`;
    item.setAttribute("role", "status");
    item.textContent = text;
    box.appendChild(item);
    setTimeout(() => item.remove(), 5000);
  }

  // --- IndexedDB ---
  let dbPromise = null;
  function db() {
    if (!dbPromise) {
      dbPromise = new Promise((resolve, reject) => {
        if (!window.indexedDB) return reject(new Error("no IndexedDB"));
        const open = indexedDB.open(DB_NAME, 1);
        open.onupgradeneeded = () => {
          const store = open.result.createObjectStore(STORE, {keyPath: "id"});
          store.createIndex("time", "time");
        };
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
    }
    return dbPromise;
  }
  function tx(mode, work) {
    return db().then((database) => new Promise((resolve, reject) => {
      const t = database.transaction(STORE, mode);
      const store = t.objectStore(STORE);
      let value;
      Promise.resolve(work(store)).then((v) => { value = v; });
      t.oncomplete = () => resolve(value);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    }));
  }
  const req = (request) => new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const allEntries = () => tx("readonly", (store) => req(store.getAll()))
    .then((list) => list.sort((a, b) => b.time - a.time));
  const getEntry = (id) => tx("readonly", (store) => req(store.get(id)));

  async function putEntries(entries) {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await tx("readwrite", (store) => { entries.forEach((entry) => store.put(entry)); });
        await trim(MAX_ENTRIES);
        return;
      } catch (error) {
        if (!error || error.name !== "QuotaExceededError") throw error;
        const list = await allEntries();
        await trim(Math.max(0, Math.floor(list.length * 0.8) - entries.length));
        toast(T.full, "warning");
      }
    }
  }
  async function trim(keep) {
    const list = await allEntries();
    if (list.length <= keep) return;
    const drop = list.slice(keep).map((entry) => entry.id);
    await tx("readwrite", (store) => { drop.forEach((id) => store.delete(id)); });
  }

  // --- files ---
  function fileUrl(value) {
    if (!value) return null;
    if (Array.isArray(value)) value = value[0];
    if (value && value.image) value = value.image;
    if (typeof value === "string") return value.startsWith("http") || value.startsWith("data:") || value.startsWith("/")
      ? value : new URL(`gradio_api/file=${value}`, document.baseURI).href;
    if (value.url) return value.url;
    if (value.path) return new URL(`gradio_api/file=${value.path}`, document.baseURI).href;
    return null;
  }
  async function fetchBlob(value) {
    const url = fileUrl(value);
    if (!url) return null;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return response.blob();
  }
  async function thumbnail(blob) {
    const bitmap = await createImageBitmap(blob);
    const scale = Math.min(1, THUMB / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close && bitmap.close();
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  }
  // The A1111 'parameters' text of one of our PNGs (tEXt or iTXt chunk), read in the browser.
  async function pngParameters(blob) {
    try {
      const bytes = new Uint8Array(await blob.arrayBuffer());
      const view = new DataView(bytes.buffer);
      let offset = 8;
      while (offset + 8 <= bytes.length) {
        const length = view.getUint32(offset);
        const type = String.fromCharCode(...bytes.subarray(offset + 4, offset + 8));
        const data = bytes.subarray(offset + 8, offset + 8 + length);
        if (type === "tEXt" || type === "iTXt") {
          const zero = data.indexOf(0);
          const key = new TextDecoder("latin1").decode(data.subarray(0, zero));
          if (key === "parameters") {
            if (type === "tEXt") return new TextDecoder("latin1").decode(data.subarray(zero + 1));
            if (data[zero + 1] !== 0) return "";  // compressed: not ours
            let rest = data.subarray(zero + 3);
            rest = rest.subarray(rest.indexOf(0) + 1);
            rest = rest.subarray(rest.indexOf(0) + 1);
            return new TextDecoder("utf-8").decode(rest);
          }
        }
        if (type === "IDAT" || type === "IEND") break;
        offset += 12 + length;
      }
    } catch (error) { /* not a PNG we can read: no infotext */ }
    return "";
  }
  const blobToDataUrl = (blob) => new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  const dataUrlToBlob = (url) => fetch(url).then((response) => response.blob());
  function slug(text) {
    const words = (text || "").toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
    let out = "";
    for (const word of words) {
      const next = out ? `${out}-${word}` : word;
      if (next.length > 32) break;
      out = next;
    }
    return out;
  }
  const fileName = (entry) => [entry.parameters.seed, slug(entry.parameters.prompt)].filter((p) => p !== "" && p !== undefined).join("-") + ".png";
  const newId = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`).replace(/[^A-Za-z0-9_-]/g, "");

  // --- recording a run (called by the page after every run) ---
  async function record(mode, imageNames, result, gallery, ...inputs) {
    try {
      const images = (result && result.images) || [];
      if (!images.length || !Array.isArray(gallery)) return;
      const inputBlobs = {};
      for (let i = 0; i < imageNames.length; i++) {
        if (inputs[i]) inputBlobs[imageNames[i]] = await fetchBlob(inputs[i]).catch(() => null);
      }
      const now = Date.now() / 1000;
      const entries = [];
      for (let i = 0; i < images.length && i < gallery.length; i++) {
        const png = await fetchBlob(gallery[i]);
        entries.push({
          id: newId(), time: now + i / 1000, mode, parameters: JSON.parse(JSON.stringify(images[i])), png, thumb: await thumbnail(png),
          infotext: await pngParameters(png), inputs: inputBlobs,
        });
      }
      await putEntries(entries);
      toast(T.saved(entries.length));
      widgets.forEach((widget) => widget.refresh());
    } catch (error) {
      console.warn("Kolors Studio: the history could not keep this run", error);
      toast(T.noStore, "warning");
    }
  }

  // --- the History tab ---
  const widgets = new Set();
  let selectedId = null;

  function element(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    Object.entries(props).forEach(([key, value]) => {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    });
    children.forEach((child) => node.appendChild(child));
    return node;
  }
  function searchText(entry) {
    const p = entry.parameters || {};
    return [p.prompt, p.negative_prompt, p.scheduler, p.mode, T.modes[p.mode], p.seed, p.model].join("\n").toLowerCase();
  }
  function formatTime(seconds) {
    const date = new Date(seconds * 1000);
    return date.toLocaleString(zh ? "zh-CN" : undefined, {dateStyle: "short", timeStyle: "short"});
  }

  function mountWidget(root) {
    if (root.dataset.ready) return;
    root.dataset.ready = "1";
    const urls = [];
    const search = element("input", {type: "search", class: "kh-search", placeholder: T.search, "aria-label": T.search,
      id: "history-search-box"});
    const count = element("span", {class: "kh-count", id: "history-count"});
    const file = element("input", {type: "file", accept: ".json,application/json", class: "kh-file", id: "history-import-file"});
    const grid = element("div", {class: "kh-grid", id: "history-grid"});
    const detail = element("div", {class: "kh-detail", id: "history-detail"});
    const button = (text, id, handler, extra = "") => element("button", {class: `kh-button ${extra}`, id, text, onclick: handler, type: "button"});
    const toolbar = element("div", {class: "kh-toolbar"}, [
      search, count,
      button(T.del, "history-delete", () => removeSelected()),
      button(T.clear, "history-clear", () => clearAll(), "kh-danger"),
      button(T.exp, "history-export", () => exportAll()),
      element("label", {class: "kh-button", for: "history-import-file", id: "history-import", text: T.imp}),
      file,
    ]);
    root.replaceChildren(toolbar, element("div", {class: "kh-body"}, [grid, detail]));
    search.addEventListener("input", () => widget.refresh());
    file.addEventListener("change", () => { if (file.files[0]) importFile(file.files[0]).finally(() => { file.value = ""; }); });

    const widget = {
      root,
      async refresh() {
        if (!document.body.contains(root)) { widgets.delete(widget); return; }
        urls.splice(0).forEach((url) => URL.revokeObjectURL(url));
        let list;
        try { list = await allEntries(); } catch (error) { grid.replaceChildren(element("p", {text: T.noStore})); return; }
        const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
        const shown = list.filter((entry) => words.every((word) => searchText(entry).includes(word)));
        count.textContent = T.count(shown.length);
        if (!shown.some((entry) => entry.id === selectedId)) selectedId = null;
        if (!list.length) grid.replaceChildren(element("p", {class: "kh-empty", text: T.empty}));
        else grid.replaceChildren(...shown.map((entry) => card(entry)));
        showDetail(shown.find((entry) => entry.id === selectedId));
      },
    };
    function card(entry) {
      const url = URL.createObjectURL(entry.thumb || entry.png);
      urls.push(url);
      const p = entry.parameters || {};
      const node = element("button", {class: `kh-card${entry.id === selectedId ? " kh-selected" : ""}`, type: "button",
        "data-id": entry.id, title: p.prompt || "", onclick: () => { selectedId = entry.id; widget.refresh(); }}, [
        element("img", {src: url, alt: `${T.seed} ${p.seed}`, loading: "lazy"}),
        element("span", {class: "kh-caption", text: `${T.seed} ${p.seed} · ${T.modes[p.mode] || ""}`}),
        element("span", {class: "kh-prompt", text: p.prompt || ""}),
        element("span", {class: "kh-time", text: formatTime(entry.time)}),
      ]);
      return node;
    }
    function showDetail(entry) {
      if (!entry) { detail.replaceChildren(element("p", {class: "kh-hint", text: T.none})); return; }
      const url = URL.createObjectURL(entry.png);
      urls.push(url);
      const parts = [
        element("img", {src: url, class: "kh-full", alt: `${T.seed} ${entry.parameters.seed}`}),
        element("div", {class: "kh-actions"}, [
          element("a", {href: url, target: "_blank", rel: "noopener", class: "kh-button", id: "history-open", text: T.open}),
          element("a", {href: url, download: fileName(entry), class: "kh-button", id: "history-download", text: T.download}),
        ]),
        element("pre", {class: "kh-infotext", id: "history-infotext", text: entry.infotext || JSON.stringify(entry.parameters, null, 1)}),
      ];
      Object.entries(entry.inputs || {}).forEach(([name, blob]) => {
        if (!blob) return;
        const inputUrl = URL.createObjectURL(blob);
        urls.push(inputUrl);
        parts.push(element("figure", {class: "kh-input"}, [
          element("img", {src: inputUrl, alt: name === "ip_adapter_image" ? T.reference : T.init}),
          element("figcaption", {text: name === "ip_adapter_image" ? T.reference : T.init}),
        ]));
      });
      detail.replaceChildren(...parts);
    }
    widgets.add(widget);
    widget.refresh();
  }

  async function removeSelected() {
    if (!selectedId) { toast(T.none, "warning"); return; }
    const id = selectedId;
    selectedId = null;
    await tx("readwrite", (store) => { store.delete(id); });
    toast(T.deleted);
    widgets.forEach((widget) => widget.refresh());
  }
  async function clearAll() {
    const list = await allEntries();
    if (!list.length) { toast(T.cleared); return; }
    if (!window.confirm(T.confirmClear(list.length))) return;
    await tx("readwrite", (store) => { store.clear(); });
    selectedId = null;
    toast(T.cleared);
    widgets.forEach((widget) => widget.refresh());
  }
  async function exportAll() {
    const list = await allEntries();
    const entries = [];
    for (const entry of list) {
      const inputs = {};
      for (const [name, blob] of Object.entries(entry.inputs || {})) if (blob) inputs[name] = await blobToDataUrl(blob);
      entries.push({id: entry.id, time: entry.time, parameters: entry.parameters, infotext: entry.infotext || "",
        image: await blobToDataUrl(entry.png), inputs});
    }
    const blob = new Blob([JSON.stringify({format: EXPORT_FORMAT, version: 2, entries})], {type: "application/json"});
    const link = element("a", {href: URL.createObjectURL(blob), download: "kolors-studio-history.json"});
    document.body.appendChild(link);
    link.click();
    setTimeout(() => { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    toast(T.exported(entries.length));
  }
  async function importFile(file) {
    try {
      if (file.size > MAX_IMPORT_BYTES) throw new Error(T.tooBig);
      let document_;
      try { document_ = JSON.parse(await file.text()); } catch (error) { throw new Error(T.notOurs); }
      let items = document_;
      if (document_ && !Array.isArray(document_)) {
        if (document_.format !== undefined && document_.format !== EXPORT_FORMAT) throw new Error(T.notOurs);
        items = document_.entries;
      }
      if (!Array.isArray(items)) throw new Error(T.notOurs);
      const entries = [];
      for (const item of items) {
        if (!item || typeof item !== "object" || !item.parameters || typeof item.parameters !== "object") continue;
        const source = item.image || item.thumbnail;
        if (typeof source !== "string" || !source.startsWith("data:image/")) continue;
        const png = await dataUrlToBlob(source).catch(() => null);
        if (!png) continue;
        const inputs = {};
        for (const [name, url] of Object.entries(item.inputs || {})) {
          if (typeof url === "string" && url.startsWith("data:image/")) inputs[name] = await dataUrlToBlob(url).catch(() => null);
        }
        const time = typeof item.time === "number" && isFinite(item.time) ? item.time : Date.now() / 1000;
        entries.push({id: typeof item.id === "string" && ID.test(item.id) ? item.id : newId(), time,
          mode: item.parameters.mode, parameters: item.parameters, png, thumb: await thumbnail(png).catch(() => png),
          infotext: typeof item.infotext === "string" ? item.infotext : "", inputs});
      }
      if (!entries.length) throw new Error(T.noEntries);
      await putEntries(entries);
      toast(T.imported(entries.length));
      widgets.forEach((widget) => widget.refresh());
    } catch (error) {
      toast(T.badFile(error.message), "warning");
    }
  }

  // What the Restore button sends: the entry's parameters and its images, uploaded to this server for the run.
  async function upload(blob, name) {
    const form = new FormData();
    form.append("files", new File([blob], name, {type: blob.type || "image/png"}));
    const response = await fetch(new URL("gradio_api/upload", document.baseURI), {method: "POST", body: form});
    if (!response.ok) throw new Error(`upload: HTTP ${response.status}`);
    return (await response.json())[0];
  }
  async function restorePayload() {
    if (!selectedId) return [""];
    const entry = await getEntry(selectedId);
    if (!entry) return [""];
    const payload = {parameters: entry.parameters};
    for (const [name, blob] of Object.entries(entry.inputs || {})) {
      if (blob) payload[name] = await upload(blob, `${name}.png`);
    }
    return [JSON.stringify(payload)];
  }

  // --- last settings per tab ---
  function readSettings() {
    try { return JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}") || {}; } catch (error) { return {}; }
  }
  function saveSettings(mode, names, values) {
    try {
      const all = readSettings();
      all[mode] = Object.fromEntries(names.map((name, i) => [name, values[i]]).filter(([, v]) => v !== null && v !== undefined));
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(all));
    } catch (error) { /* private mode or full storage: settings are a nicety */ }
  }
  function forgetSettings(mode) {
    try {
      const all = readSettings();
      delete all[mode];
      localStorage.setItem(SETTINGS_KEY, JSON.stringify(all));
    } catch (error) { /* nothing kept */ }
  }
  const loadSettings = () => localStorage.getItem(SETTINGS_KEY) || "";

  // --- Ctrl+Enter (Cmd+Enter) in a prompt box generates, as in A1111, Fooocus and ComfyUI ---
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    const box = event.target.closest && event.target.closest(".studio-prompt");
    if (!box || !box.id) return;
    const mode = box.id.replace(/-(prompt|negative)$/, "");
    const button = document.getElementById(`${mode}-generate`);
    if (button) { event.preventDefault(); button.click(); }
  }, true);

  // gradio 6 leaves some of its own translation keys untranslated in zh-CN pages: show them in words.
  const LEAKED = {"common.complete": zh ? "完成" : "Complete"};
  // gradio 6.31's toasts show their type as the title ("Warning"), in English whatever the page's language
  // (the title passed to gr.Warning is not shown).
  const TOAST_TITLES = zh ? {Warning: "警告", Info: "提示", Error: "错误", Success: "成功"} : {};
  const fixLeaked = () => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const node = walker.currentNode, key = node.textContent.trim();
      if (LEAKED[key]) node.textContent = LEAKED[key];
      else if (TOAST_TITLES[key] && node.parentElement && node.parentElement.classList.contains("toast-title")) {
        node.textContent = node.textContent.replace(key, TOAST_TITLES[key]);
      }
    }
  };

  // gradio mounts a tab's content when it is first opened: build the history view whenever it appears.
  let fixing = false;
  const watch = () => {
    document.querySelectorAll("#kolors-history").forEach(mountWidget);
    if (!fixing && document.body) { fixing = true; requestAnimationFrame(() => { fixLeaked(); fixing = false; }); }
  };
  new MutationObserver(watch).observe(document.documentElement, {childList: true, subtree: true});
  document.addEventListener("DOMContentLoaded", watch);

  window.kolorsStudio = {record, restorePayload, saveSettings, loadSettings, forgetSettings, toast,
    entries: allEntries};
})();
