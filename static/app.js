// memesearch query builder and result actions: plain JavaScript, no build step.
// The URL holds the whole query (t=kind:weight:value), so searching is navigating.
(() => {
  "use strict";

  const form = document.getElementById("search");
  const list = document.getElementById("terms");
  const toastBox = document.getElementById("toast");
  const overlay = document.getElementById("drop-overlay");
  const TILE_ID_TYPE = "application/x-memesearch-id";
  let pendingUploads = [];
  let toastTimer = 0;

  function toast(message, isError = false) {
    toastBox.textContent = message;
    toastBox.classList.toggle("is-error", isError);
    toastBox.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => toastBox.classList.remove("show"), 2600);
  }

  // ---- query builder -------------------------------------------------------------------------

  function weightLabel(weight) {
    const sign = weight < 0 ? "\u2212" : weight > 0 ? "+" : "";
    return sign + Math.abs(weight).toFixed(1);
  }

  function showWeight(row, weight) {
    row.dataset.weight = String(weight);
    row.querySelector("output").textContent = weightLabel(weight);
    row.classList.toggle("negative", weight < 0);
    row.classList.toggle("zero", weight === 0);
  }

  function encodePart(text) {
    // Colons are legal in a query string; keeping them makes URLs readable (t=text:1:cat).
    return encodeURIComponent(text).replace(/%3A/gi, ":").replace(/%20/g, "+");
  }

  function termParams() {
    const params = [];
    for (const row of list.querySelectorAll(".term")) {
      const weight = String(Number(Number(row.dataset.weight).toFixed(2)));
      const value = row.dataset.kind === "text"
        ? row.querySelector(".term-text").value.trim()
        : row.dataset.value;
      if (value) params.push(`${row.dataset.kind}:${weight}:${value}`);
    }
    return params;
  }

  async function search() {
    await Promise.allSettled(pendingUploads);
    const params = termParams();
    if (!params.length) {
      toast("Type a description or add an image first");
      list.querySelector(".term-text")?.focus();
      return;
    }
    window.location.assign("/?" + params.map((p) => "t=" + encodePart(p)).join("&"));
  }

  function newRow(templateId) {
    const row = document.getElementById(templateId).content.firstElementChild.cloneNode(true);
    list.append(row);
    return row;
  }

  function addTextTerm() {
    newRow("text-term").querySelector(".term-text").focus();
  }

  function addIdTerm(id) {
    const row = newRow("image-term");
    row.dataset.kind = "id";
    row.dataset.value = id;
    row.querySelector(".term-thumb").src = document.querySelector(`.tile[data-id="${id}"] img`)?.src || "";
    row.querySelector(".term-label").textContent = "Indexed image";
  }

  async function uploadImage(file, row) {
    const body = new FormData();
    body.append("image", file, file.name || "pasted.png");
    const response = await fetch("/upload", { method: "POST", body });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.detail || `upload failed (${response.status})`);
    row.dataset.value = answer.hash;
    row.classList.remove("uploading");
    row.querySelector(".term-label").textContent = "Your image";
  }

  function addImageTerms(files) {
    const images = [...files].filter((file) => file.type.startsWith("image/"));
    if (!images.length) {
      toast("That is not an image", true);
      return;
    }
    const uploads = images.map((file) => {
      const row = newRow("image-term");
      row.classList.add("uploading");
      row.querySelector(".term-thumb").src = URL.createObjectURL(file);
      row.querySelector(".term-label").textContent = "Uploading…";
      return uploadImage(file, row).catch((error) => {
        row.remove();
        toast(`Could not use that image: ${error.message}`, true);
        throw error;
      });
    });
    pendingUploads = uploads;
    Promise.allSettled(uploads).then((outcomes) => {
      if (outcomes.some((o) => o.status === "fulfilled")) search();
    });
  }

  function removeTerm(row) {
    row.remove();
    if (!list.querySelector(".term")) addTextTerm();
  }

  if (form && list) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      search();
    });
    list.addEventListener("input", (event) => {
      if (event.target.type === "range") {
        showWeight(event.target.closest(".term"), Number(event.target.value));
      }
    });
    form.addEventListener("click", (event) => {
      const remove = event.target.closest("[data-remove]");
      if (remove) removeTerm(remove.closest(".term"));
      if (event.target.closest("[data-add-text]")) addTextTerm();
    });
    form.querySelector("[data-file-picker]")?.addEventListener("change", (event) => {
      addImageTerms(event.target.files);
      event.target.value = "";
    });
  }

  // ---- paste and drag-and-drop ---------------------------------------------------------------

  function imageFiles(transfer) {
    if (!transfer) return [];
    const fromItems = [...(transfer.items || [])]
      .filter((item) => item.kind === "file" && item.type.startsWith("image/"))
      .map((item) => item.getAsFile())
      .filter(Boolean);
    return fromItems.length ? fromItems : [...(transfer.files || [])];
  }

  document.addEventListener("paste", (event) => {
    const files = imageFiles(event.clipboardData);
    if (!files.length || !form) return; // plain text pastes into the focused field as usual
    event.preventDefault();
    addImageTerms(files);
  });

  function isUsefulDrag(event) {
    const types = [...(event.dataTransfer?.types || [])];
    return types.includes("Files") || types.includes(TILE_ID_TYPE);
  }

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!isUsefulDrag(event) || !form) return;
    dragDepth += 1;
    overlay.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) overlay.hidden = true;
  });
  document.addEventListener("dragover", (event) => {
    if (isUsefulDrag(event) && form) event.preventDefault();
  });
  document.addEventListener("drop", (event) => {
    dragDepth = 0;
    overlay.hidden = true;
    if (!isUsefulDrag(event) || !form) return;
    event.preventDefault();
    const tileId = event.dataTransfer.getData(TILE_ID_TYPE);
    if (tileId) {
      addIdTerm(tileId);
      search();
      return;
    }
    addImageTerms(imageFiles(event.dataTransfer));
  });
  document.addEventListener("dragstart", (event) => {
    const tile = event.target.closest?.(".tile");
    if (tile) event.dataTransfer.setData(TILE_ID_TYPE, tile.dataset.id);
  });

  // ---- result tiles --------------------------------------------------------------------------

  async function asPng(blob) {
    if (blob.type === "image/png") return blob;
    const bitmap = await createImageBitmap(blob);
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.getContext("2d").drawImage(bitmap, 0, 0);
    return new Promise((resolve, reject) =>
      canvas.toBlob((png) => (png ? resolve(png) : reject(new Error("cannot encode"))), "image/png"));
  }

  async function copyImage(url) {
    if (!navigator.clipboard?.write || typeof ClipboardItem === "undefined") {
      toast("This browser cannot copy images; use download instead", true);
      return;
    }
    try {
      // A promise inside the ClipboardItem keeps the click's permission while the image loads.
      const png = fetch(url).then((r) => (r.ok ? r.blob() : Promise.reject(r.status))).then(asPng);
      await navigator.clipboard.write([new ClipboardItem({ "image/png": png })]);
      toast("Image copied");
    } catch {
      toast("Could not copy the image; try download instead", true);
    }
  }

  async function copyLink(url) {
    const absolute = new URL(url, window.location.href).href;
    try {
      await navigator.clipboard.writeText(absolute);
      toast("Link copied");
    } catch {
      window.prompt("Copy this link:", absolute);
    }
  }

  document.addEventListener("click", (event) => {
    const imageButton = event.target.closest("[data-copy-image]");
    if (imageButton) copyImage(imageButton.dataset.copyImage);
    const linkButton = event.target.closest("[data-copy-link]");
    if (linkButton) copyLink(linkButton.dataset.copyLink);
  });

  // A thumbnail that cannot load (an id no longer indexed, an expired upload) shows a placeholder.
  const PLACEHOLDER = "data:image/svg+xml," + encodeURIComponent(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="#8a91a0" ' +
    'stroke-width="1.5"><rect x="4" y="5" width="16" height="14" rx="2"/><path d="m4 16 5-5 11 8"/>' +
    '<circle cx="15" cy="9.5" r="1.5"/></svg>');
  function markBroken(image) {
    if (image.classList.contains("term-thumb")) image.src = PLACEHOLDER;
    else image.classList.add("is-broken");
  }
  document.addEventListener("error", (event) => {
    if (event.target.matches?.(".term-thumb, .tile img")) markBroken(event.target);
  }, true);
  document.querySelectorAll(".term-thumb, .tile img").forEach((image) => {
    if (image.complete && image.getAttribute("src") && !image.naturalWidth) markBroken(image);
  });

  document.addEventListener("htmx:sendError", () => toast("Could not reach the server", true));
  document.addEventListener("htmx:responseError", () => toast("Loading more results failed", true));
})();
