// Runs before the page's modules load: asks for the list of pipelines and the instance list of
// the one shown first at once, so the data arrives while the scripts are fetched and compiled.
(function () {
  'use strict';
  var names = JSON.parse(document.currentScript.getAttribute('data-pipelines') || '[]');
  var wanted = new URLSearchParams(location.hash.slice(1)).get('p');
  var name = wanted && names.indexOf(wanted) >= 0 ? wanted : names[0];
  var get = function (url) {
    var r = fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    r.catch(function () {});
    return r;
  };
  window.__early = { list: get('/api/pipelines') };
  if (!name) return;
  window.__early.name = name;
  window.__early.res = get('/api/pipelines/' + encodeURIComponent(name) + '/instances');
})();
