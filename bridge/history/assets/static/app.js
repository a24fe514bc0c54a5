// History page enhancements; the page works without them.
// Adds a 复制 (copy) button under each rendered answer.
(function () {
  "use strict";

  function fallbackCopy(text) {
    var ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.className = "offscreen";
    document.body.appendChild(ta);
    ta.select();
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(ta);
    return ok;
  }

  function copy(text, btn) {
    var done = function () {
      btn.textContent = "已复制";
      setTimeout(function () { btn.textContent = "复制"; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {
        if (fallbackCopy(text)) { done(); }
      });
    } else if (fallbackCopy(text)) {
      done();
    }
  }

  var answers = document.querySelectorAll(".a .md");
  for (var i = 0; i < answers.length; i++) {
    (function (md) {
      var btn = document.createElement("button");
      btn.type = "button";
      btn.className = "copy";
      btn.textContent = "复制";
      btn.addEventListener("click", function () { copy(md.innerText, btn); });
      md.parentNode.appendChild(btn);
    })(answers[i]);
  }
})();
