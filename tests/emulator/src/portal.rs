//! `GET /portal/?app=URL&placement=CODE&options=JSON&admin=1&client_id=ID`: a portal page that
//! hosts an app in an iframe the way Bitrix24 does (`window.name` = `DOMAIN|PROTOCOL|APP_SID`,
//! the app on its own origin) and answers the frame protocol: `getInitData`, `refreshAuth`
//! (a fresh token from this emulator), `setTitle`, `resizeWindow`, `setInstallFinish`, and
//! logs every command the app sends. `mute=cmd1,cmd2` leaves those commands unanswered and
//! `third=URL` adds a hidden iframe of a third origin (for forgery tests).

/// The page; everything it needs comes from its query string and this emulator.
pub const PAGE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Bitrix24 (emulator)</title>
<style>
  body { margin: 0; font: 14px/1.4 system-ui, sans-serif; background: #eef2f4; color: #333; }
  header { display: flex; gap: 16px; align-items: center; padding: 10px 18px; background: #2fc6f6; color: #fff; }
  header b { font-size: 16px; }
  header .who { margin-left: auto; }
  header select { font: inherit; }
  main { display: grid; grid-template-columns: 1fr 320px; gap: 16px; padding: 16px; }
  .card { background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08); }
  #title { padding: 10px 14px; border-bottom: 1px solid #e6e9eb; font-weight: 600; }
  #app { width: 100%; height: 820px; border: 0; display: block; border-radius: 0 0 8px 8px; }
  aside { padding: 12px 14px; }
  aside h3 { margin: 0 0 8px; font-size: 13px; text-transform: uppercase; color: #8a949c; }
  #log { list-style: none; margin: 0; padding: 0; font: 12px/1.5 ui-monospace, monospace; max-height: 760px; overflow: auto; }
  #log li { border-bottom: 1px dashed #eef0f1; padding: 3px 0; word-break: break-all; }
  #third { display: none; }
</style>
</head>
<body>
<header>
  <b>Bitrix24</b><span>emulator portal</span><span id="placement"></span>
  <label class="who">user
    <select id="admin"><option value="1">administrator</option><option value="0">employee</option></select>
  </label>
</header>
<main>
  <section class="card" id="host"><div id="title">Application</div></section>
  <aside class="card"><h3>What the app asked for</h3><ul id="log"></ul></aside>
</main>
<iframe id="third" title="third party"></iframe>
<script>
(async () => {
  const q = new URLSearchParams(location.search);
  const appUrl = q.get('app');
  const log = [];
  const ui = document.getElementById('log');
  const note = (text) => { log.push(text); const li = document.createElement('li'); li.textContent = text; ui.prepend(li); };
  window.portal = { log, refreshes: 0, commands: [], ready: false };
  if (!appUrl) { note('no app: open /portal/?app=URL'); return; }
  const appOrigin = new URL(appUrl, location.href).origin;
  const placement = q.get('placement') || 'DEFAULT';
  const options = q.get('options') || '{}';
  const admin = q.get('admin') !== '0';
  const clientId = q.get('client_id') || 'local.app';
  const userId = Number(q.get('user_id') || (admin ? 1 : 2));
  const mute = (q.get('mute') || '').split(',').filter(Boolean);
  const lang = q.get('lang') || 'en';
  const sel = document.getElementById('admin');
  sel.value = admin ? '1' : '0';
  sel.onchange = () => { q.set('admin', sel.value); location.search = q.toString(); };
  document.getElementById('placement').textContent = placement;
  const hex = (n) => Array.from(crypto.getRandomValues(new Uint8Array(n)), (b) => b.toString(16).padStart(2, '0')).join('');
  const appSid = hex(16);
  const domain = location.host;
  const protocol = location.protocol === 'https:' ? 1 : 0;
  const issue = async () => {
    const r = await fetch('/_emulator/token', { method: 'POST', body: JSON.stringify({ user_id: userId, admin, client_id: clientId }) });
    return r.json();
  };
  let auth = await issue();
  window.portal.auth = () => auth;
  window.portal.appSid = appSid;
  let installed = q.get('install') !== '1';
  // The frame is made with its name in place: a browsing context takes its name when created.
  const frame = document.createElement('iframe');
  frame.id = 'app';
  frame.title = 'application';
  frame.name = `${domain}|${protocol}|${appSid}`;
  const handlers = {
    getInitData: () => ({
      DOMAIN: domain, PROTOCOL: protocol, PATH: '/rest', LANG: lang, APP_SID: appSid,
      AUTH_ID: auth.access_token, AUTH_EXPIRES: auth.expires_in, REFRESH_ID: auth.refresh_token,
      MEMBER_ID: auth.member_id, IS_ADMIN: admin, INSTALL: !installed, FIRST_RUN: false,
      PLACEMENT: placement, PLACEMENT_OPTIONS: options, USER_OPTIONS: {}, APP_OPTIONS: {},
    }),
    refreshAuth: async () => {
      auth = await issue();
      window.portal.refreshes += 1;
      return { AUTH_ID: auth.access_token, REFRESH_ID: auth.refresh_token, AUTH_EXPIRES: auth.expires_in };
    },
    setTitle: (p) => { document.getElementById('title').textContent = (p && p.title) || ''; return {}; },
    resizeWindow: (p) => { if (p && p.height) frame.style.height = p.height + 'px'; return {}; },
    setInstallFinish: () => { installed = true; return {}; },
  };
  window.addEventListener('message', async (event) => {
    if (event.source !== frame.contentWindow || event.origin !== appOrigin) return;
    let command, params, callback, sid;
    if (typeof event.data === 'string') {
      const parts = event.data.split(':');
      if (parts.length < 3) return;
      command = parts[0];
      sid = parts[parts.length - 1];
      callback = parts[parts.length - 2];
      const raw = parts.slice(1, -2).join(':');
      try { params = raw ? JSON.parse(raw) : null; } catch { params = raw; }
    } else if (event.data && typeof event.data === 'object') {
      ({ method: command, params, callback, appSid: sid } = event.data);
    } else {
      return;
    }
    if (sid !== appSid) { note(`ignored ${command}: wrong app sid`); return; }
    window.portal.commands.push({ command, params, callback });
    note(`${command}${params ? ' ' + JSON.stringify(params) : ''}`);
    if (mute.includes(command)) return;
    const answer = handlers[command] ? await handlers[command](params) : {};
    frame.contentWindow.postMessage(`${callback}:${JSON.stringify(answer)}`, appOrigin);
  });
  const target = new URL(appUrl, location.href);
  for (const [k, v] of [['DOMAIN', domain], ['PROTOCOL', String(protocol)], ['LANG', lang], ['APP_SID', appSid]]) target.searchParams.set(k, v);
  frame.src = target.toString();
  document.getElementById('host').appendChild(frame);
  if (q.get('third')) document.getElementById('third').src = q.get('third');
  window.portal.ready = true;
  note(`hosting ${appOrigin} as ${admin ? 'administrator' : 'employee'} #${userId}`);
})();
</script>
</body>
</html>
"##;
