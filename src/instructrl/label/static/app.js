// Ranking by drag-and-drop or keyboard (ties allowed), comparisons by keyboard, and one-shot form submission.
// The rank inputs are the source of truth the server reads; the list order and the tie marks mirror them.
"use strict";

function setupRanking(list) {
  const items = () => Array.from(list.querySelectorAll(".rank-item"));
  const rankOf = (li) => parseInt(li.querySelector(".rank-input").value, 10);

  // Ranks from the current order plus tie marks: dense ranks, 1 = best.
  function ranksFromOrder() {
    let rank = 0;
    items().forEach((li, i) => {
      if (i === 0) li.classList.remove("tied");
      if (!li.classList.contains("tied")) rank += 1;
      li.querySelector(".rank-input").value = rank;
    });
  }

  // Order and tie marks from typed ranks (when every output has one).
  function orderFromRanks() {
    const all = items();
    if (all.some((li) => Number.isNaN(rankOf(li)))) return;
    all.sort((a, b) => rankOf(a) - rankOf(b)).forEach((li, i, arr) => {
      list.appendChild(li);
      li.classList.toggle("tied", i > 0 && rankOf(arr[i - 1]) === rankOf(li));
    });
  }

  function move(li, delta) {
    const all = items();
    const j = all.indexOf(li) + delta;
    if (j < 0 || j >= all.length) return;
    li.classList.remove("tied");
    if (delta < 0) list.insertBefore(li, all[j]); else list.insertBefore(li, all[j].nextSibling);
    ranksFromOrder();
    li.focus();
  }

  let dragged = null;
  items().forEach((li) => {
    li.addEventListener("dragstart", (e) => { dragged = li; li.classList.add("dragging"); e.dataTransfer.effectAllowed = "move"; e.dataTransfer.setData("text/plain", li.dataset.cid); });
    li.addEventListener("dragend", () => { li.classList.remove("dragging"); items().forEach((x) => x.classList.remove("over")); dragged = null; });
    li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("over"); });
    li.addEventListener("dragleave", () => li.classList.remove("over"));
    li.addEventListener("drop", (e) => {
      e.preventDefault();
      li.classList.remove("over");
      if (!dragged || dragged === li) return;
      const all = items();
      dragged.classList.remove("tied");
      if (all.indexOf(dragged) < all.indexOf(li)) list.insertBefore(dragged, li.nextSibling); else list.insertBefore(dragged, li);
      ranksFromOrder();
    });
    li.addEventListener("keydown", (e) => {
      if (e.target.classList.contains("rank-input")) return; // typing a number
      if (e.key === "ArrowUp" || e.key === "k") { e.preventDefault(); move(li, -1); }
      else if (e.key === "ArrowDown" || e.key === "j") { e.preventDefault(); move(li, 1); }
      else if (e.key === "t" || e.key === "T") {
        e.preventDefault();
        if (items().indexOf(li) > 0) li.classList.toggle("tied");
        ranksFromOrder();
      }
    });
    li.querySelector(".rank-input").addEventListener("change", orderFromRanks);
  });
  orderFromRanks(); // a submitted ranking, or values kept after a validation error
}

// A blind comparison from the keyboard: digits score the highlighted side (left, then right), the arrows
// choose, Enter submits. Typing in a field keeps its own keys.
function setupComparison(form) {
  const sides = Array.from(form.querySelectorAll(".side"));
  let current = 0;
  const highlight = () => sides.forEach((s, i) => s.classList.toggle("active", i === current));
  const showChoice = () => {
    const c = form.querySelector("input[name=choice]:checked");
    sides.forEach((s) => s.classList.toggle("preferred", !!c && s.id === "side-" + c.value));
  };
  const choose = (value) => {
    const input = form.querySelector("input[name=choice][value=" + value + "]");
    if (input) { input.checked = true; showChoice(); }
  };
  sides.forEach((s, i) => s.addEventListener("focusin", () => { current = i; highlight(); }));
  form.querySelectorAll("input[name=choice]").forEach((i) => i.addEventListener("change", showChoice));
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (["TEXTAREA", "BUTTON", "A", "SELECT"].includes(t.tagName) || (t.tagName === "INPUT" && !["radio", "checkbox"].includes(t.type))) return;
    if (/^[1-7]$/.test(e.key)) {
      const box = sides[current].querySelector("input[type=radio][value='" + e.key + "']");
      if (box) { e.preventDefault(); box.checked = true; current = (current + 1) % sides.length; highlight(); }
    } else if (e.key === "Enter") { e.preventDefault(); form.requestSubmit(); }
    else if (t.tagName === "INPUT" && t.type === "radio") {
      return; // arrows on a focused radio move within its own group
    } else if (e.key === "ArrowLeft") { e.preventDefault(); choose("left"); }
    else if (e.key === "ArrowRight") { e.preventDefault(); choose("right"); }
    else if (e.key === "ArrowDown") { e.preventDefault(); choose("tie"); }
  });
  highlight();
  showChoice();
}

document.addEventListener("DOMContentLoaded", () => {
  const comparison = document.getElementById("comparison-form");
  if (comparison && comparison.querySelector("#submit")) setupComparison(comparison);
  const list = document.getElementById("rank-list");
  if (list && !list.classList.contains("readonly")) setupRanking(list);
  else if (list) { // read-only: show it in rank order
    const all = Array.from(list.querySelectorAll(".rank-item"));
    const r = (li) => parseInt(li.querySelector(".rank-input").value, 10);
    all.sort((a, b) => r(a) - r(b)).forEach((li, i, arr) => { list.appendChild(li); li.classList.toggle("tied", i > 0 && r(arr[i - 1]) === r(li)); });
  }
  // A second click while the first submission is on its way would be refused by the server anyway.
  document.querySelectorAll("form.submit-once").forEach((form) => {
    form.addEventListener("submit", () => {
      form.querySelectorAll("button[type=submit]").forEach((b) => { setTimeout(() => { b.disabled = true; }, 0); });
    });
  });
});
