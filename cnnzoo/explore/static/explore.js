// cnnzoo explore: the few behaviours the pages need, in plain JavaScript (no framework, nothing fetched
// from elsewhere than this server).
var cnnzoo = (function () {
  'use strict';

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // The zoo: filter rows by name, family or year as one types; sort by a column on click.
  function zooPage() {
    var input = document.getElementById('filter');
    var rows = Array.prototype.slice.call(document.querySelectorAll('#zoo tbody tr'));
    var count = document.getElementById('count');
    function filter() {
      var q = input.value.trim().toLowerCase();
      var shown = 0;
      rows.forEach(function (r) {
        var hay = (r.dataset.name + ' ' + r.dataset.family + ' ' + r.dataset.year).toLowerCase();
        var ok = !q || hay.indexOf(q) >= 0;
        r.style.display = ok ? '' : 'none';
        shown += ok ? 1 : 0;
      });
      count.textContent = shown + ' of ' + rows.length + ' models';
    }
    input.addEventListener('input', filter);
    document.querySelectorAll('#zoo th').forEach(function (th) {
      th.addEventListener('click', function () {
        var key = th.dataset.key, numeric = th.hasAttribute('data-num');
        var dir = th.dataset.dir === 'asc' ? -1 : 1;
        document.querySelectorAll('#zoo th').forEach(function (h) { delete h.dataset.dir; });
        th.dataset.dir = dir === 1 ? 'asc' : 'desc';
        rows.sort(function (a, b) {
          var x = a.dataset[key], y = b.dataset[key];
          var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return dir * c;
        });
        var body = document.querySelector('#zoo tbody');
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    filter();
  }

  function showError(box, message) {
    box.textContent = '';
    box.appendChild(el('p', {'class': 'error'}, message));
  }

  function renderResults(box, data) {
    box.textContent = '';
    data.results.forEach(function (r) {
      var card = el('section', {'class': 'result', 'data-checkpoint': r.checkpoint});
      card.appendChild(el('h3', {}, r.checkpoint + ' (' + r.model + ')'));
      var list = el('ol', {'class': 'topk'});
      r.top.forEach(function (t) {
        var li = el('li', {});
        li.appendChild(el('span', {'class': 'cls'}, t['class']));
        var bar = el('span', {'class': 'bar'});
        bar.style.width = Math.max(1, Math.round(200 * t.prob)) + 'px';
        li.appendChild(bar);
        li.appendChild(el('span', {'class': 'prob'}, (100 * t.prob).toFixed(1) + '%'));
        list.appendChild(li);
      });
      card.appendChild(list);
      var maps = el('div', {'class': 'maps'});
      ['input', 'cam', 'occlusion', 'features'].forEach(function (kind) {
        if (!r.images[kind]) { return; }
        var fig = el('figure', {});
        fig.appendChild(el('img', {'class': 'map ' + kind, src: r.images[kind], alt: kind}));
        var captions = {input: 'input, as the model sees it', cam: 'Grad-CAM (' + r.top[0]['class'] + ')',
                        occlusion: 'occlusion (' + r.top[0]['class'] + ')',
                        features: (r.layer || 'features') + ': most active channels'};
        fig.appendChild(el('figcaption', {}, captions[kind]));
        maps.appendChild(fig);
      });
      card.appendChild(maps);
      Object.keys(r.unavailable || {}).forEach(function (kind) {
        card.appendChild(el('p', {'class': 'hint unavailable'}, kind + ': ' + r.unavailable[kind]));
      });
      box.appendChild(card);
    });
  }

  function post(form, extra, box, status) {
    var body = new FormData();
    ['checkpoint', 'topk', 'layer'].forEach(function (k) { if (form[k] && form[k].value) { body.append(k, form[k].value); } });
    ['cam', 'occlusion', 'features'].forEach(function (k) { body.append(k, form[k].checked ? 'true' : 'false'); });
    Object.keys(extra).forEach(function (k) { body.append(k, extra[k]); });
    status.textContent = 'computing...';
    fetch('/api/predict', {method: 'POST', body: body})
      .then(function (resp) { return resp.json().then(function (j) { return [resp.ok, j]; }); })
      .then(function (res) {
        status.textContent = '';
        if (res[0]) { renderResults(box, res[1]); } else { showError(box, res[1].error); }
      })
      .catch(function (err) { status.textContent = ''; showError(box, String(err)); });
  }

  // Try it: upload an image (or click a test image) and show each checkpoint's top-k and maps.
  function tryPage(checkpoints) {
    var form = document.getElementById('predict-form');
    if (!form) { return; }
    var box = document.getElementById('results'), status = document.getElementById('status');
    var select = document.getElementById('checkpoint'), layer = document.getElementById('layer');
    function refresh() {
      var c = checkpoints.filter(function (x) { return x.id === select.value; })[0] || checkpoints[0];
      layer.textContent = '';
      c.layers.slice().reverse().forEach(function (name) { layer.appendChild(el('option', {value: name}, name)); });
      loadSamples(c);
      loadCurves(select.value ? [c] : checkpoints);
    }
    // Beside the predictions, the training curves of each chosen checkpoint's run (its metrics.csv).
    function loadCurves(chosen) {
      var box = document.getElementById('curves');
      box.textContent = '';
      chosen.forEach(function (c, i) {
        var section = el('section', {'class': 'curves', 'data-checkpoint': c.id});
        var div = el('div', {id: 'curves-' + i, 'class': 'chart'});
        div.appendChild(el('p', {'class': 'hint'}, 'reading the curves of ' + c.id + '...'));
        section.appendChild(div);
        section.appendChild(el('ul', {id: 'curves-' + i + '-notes', 'class': 'notes'}));
        box.appendChild(section);
        chart('/api/checkpoints/' + encodeURIComponent(c.id) + '/curves', 'curves-' + i);
      });
    }
    function loadSamples(c) {
      var gallery = document.getElementById('samples');
      gallery.textContent = '';
      if (!select.value && checkpoints.length > 1) { return; }  // a test image belongs to one dataset
      fetch('/api/checkpoints/' + encodeURIComponent(c.id) + '/samples').then(function (resp) {
        if (!resp.ok) { return; }
        return resp.json().then(function (items) {
          gallery.appendChild(el('span', {'class': 'hint'}, 'or click a test image: '));
          items.forEach(function (s) {
            var img = el('img', {'class': 'sample', title: s.label, alt: s.label,
                                 src: '/api/checkpoints/' + encodeURIComponent(c.id) + '/samples/' + s.index + '.png'});
            img.addEventListener('click', function () { post(form, {sample: s.index}, box, status); });
            gallery.appendChild(img);
          });
        });
      });
    }
    select.addEventListener('change', refresh);
    form.addEventListener('submit', function (ev) {
      ev.preventDefault();
      var file = document.getElementById('image').files[0];
      if (!file) { showError(box, 'choose an image file first'); return; }
      post(form, {image: file}, box, status);
    });
    document.getElementById('image').addEventListener('change', function () {
      if (this.files[0]) { post(form, {image: this.files[0]}, box, status); }
    });
    refresh();
  }

  function chart(url, id) {
    var notes = document.getElementById(id + '-notes');
    function note(text, cls) { notes.appendChild(el('li', {'class': cls || ''}, text)); }
    fetch(url).then(function (resp) { return resp.json(); }).then(function (data) {
      document.getElementById(id).textContent = '';  // the "computing" note
      if (data.error) { note(data.error, data.status === 404 ? 'skipped' : 'error'); return; }  // 404: nothing there to draw
      (data.findings || []).forEach(function (t) { note(t); });
      (data.skipped || []).forEach(function (t) { note('skipped: ' + t, 'skipped'); });
      return Plotly.newPlot(id, data.figure.data, data.figure.layout, {displaylogo: false, responsive: true});
    }).catch(function (err) { note(id + ' chart: ' + err, 'error'); });
  }

  function chartsPage() {
    chart('/api/charts/accuracy', 'accuracy');
    chart('/api/charts/degradation', 'degradation');
  }

  return {zooPage: zooPage, tryPage: tryPage, chartsPage: chartsPage};
})();
