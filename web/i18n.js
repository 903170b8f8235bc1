// Every string people see, in English and Korean, and the code that puts
// them into the page. Elements say which string they show with
// data-i18n="key" (text), data-i18n-placeholder="key" or
// data-i18n-label="key" (aria-label and title).

/** @typedef {'en' | 'ko'} Lang */

const STRINGS = {
  en: {
    tagline: 'Video calls in your browser, on your own server.',
    start_call: 'Start a new call',
    or_join: 'or join a call by its name',
    room_placeholder: 'room name',
    go: 'Go',
    bad_room: 'Use 1 to 64 letters, digits, "-", "_" or ".".',
    https_note: 'This address is not secure (no HTTPS), so browsers will not turn on the camera here. Ask whoever runs this server to set up HTTPS.',
    language: 'Language',
    lobby_title: 'Ready to join?',
    who_none: 'No one else is here yet.',
    who_one: '{a} is in this call.',
    who_two: '{a} and {b} are in this call.',
    who_three: '{a}, {b} and {c} are in this call.',
    who_many: '{a}, {b} and {n} others are in this call.',
    who_count_one: 'One person is in this call.',
    who_count: '{n} people are in this call.',
    your_name: 'Your name',
    join: 'Join',
    joining: 'Joining…',
    guest: 'Guest',
    you: 'You',
    media_checking: 'Starting your camera and microphone…',
    media_ok: 'Camera and microphone are on.',
    media_denied: 'Camera and microphone are blocked. You can join to watch and listen; allow them in the address bar to be seen and heard.',
    media_missing: 'No camera or microphone found. You can join to watch and listen.',
    media_busy: 'Another app is using your camera or microphone. Close it and reload, or join to watch and listen.',
    media_insecure: 'Browsers allow the camera only over HTTPS or on localhost. You can join to watch and listen.',
    media_failed: 'Could not start your camera or microphone. You can join to watch and listen.',
    media_audio_only: 'Only your microphone is on.',
    media_off: 'Your camera and microphone are off.',
    media_video_only: 'Only your camera is on.',
    waiting: 'Waiting for someone to join. Share this link:',
    copy_link: 'Copy link',
    copied: 'Link copied.',
    connecting_to: 'Connecting to {name}…',
    peer_joined: '{name} joined.',
    peer_left: '{name} left the call.',
    peer_lost: '{name} lost their connection. Waiting for them to come back…',
    peer_gone: '{name} did not come back.',
    peer_back: '{name} is back.',
    peer_unstable: 'Connection unstable…',
    you_presenting: 'You are presenting',
    stop_presenting: 'Stop presenting',
    join_failed: 'Could not join the call. Try again.',
    call_failed: 'The call stopped because of an error. Rejoin to continue.',
    chat_too_long: 'A message can be at most 1000 characters.',
    chat_too_fast: 'Too many messages at once. Wait a moment and send again.',
    chat_rejected: 'This message could not be sent.',
    screen_unsupported: 'This browser cannot share a screen here.',
    peer_failed: 'The connection to {name} failed.',
    hang_up: 'Hang up',
    you_left: 'You left the call.',
    rejoin: 'Rejoin',
    home: 'Home',
    full_title: 'This call is full',
    full_text: 'Everyone this call has room for is already in it. Try again later, or start a new call.',
    try_again: 'Try again',
    server_unreachable: 'Cannot reach the server. Check your connection and try again.',
    server_closed: 'Lost the connection to the server.',
    server_shutdown: 'The server is shutting down.',
    error: 'Something went wrong: {message}',
    not_found_title: 'Nothing here',
    not_found_text: 'This is not a page or room name webconf knows.',
    remote_video: 'Video of {name}',
    local_video: 'Your camera',
    diag_title: 'Check my connection',
    diag_intro: 'This page tries what a call needs, one thing at a time.',
    diag_again: 'Check again',
    diag_camera: 'Camera',
    diag_mic: 'Microphone',
    diag_websocket: 'Connection to the server',
    diag_stun: 'Public address (STUN)',
    diag_turn_udp: 'Relay over UDP (TURN)',
    diag_turn_tcp: 'Relay over TCP (TURN)',
    diag_running: 'checking…',
    diag_pass: 'works',
    diag_warn: 'limited',
    diag_fail: 'fails',
    diag_skip: 'not tried',
    diag_not_offered: 'this server does not offer it',
    diag_public_address: 'others can reach you at {address}',
    diag_no_public_address: 'no public address found: STUN is blocked, or you are not behind a NAT',
    diag_relay_address: 'relay at {address}',
    diag_no_relay: 'no relay: blocked by your network, or the relay is down',
    diag_verdict_work: 'Calls will work: most will connect directly, the rest through the relay.',
    diag_verdict_relay: 'Calls will work. A direct connection could not be confirmed, so some calls may go through the relay.',
    diag_no_nat: 'no NAT in the way: others reach you directly at {address}',
    diag_checking: 'Checking… this takes a few seconds.',
    diag_verdict_most: 'Calls will work with most networks, but will fail behind strict firewalls: the relay is not reachable.',
    diag_verdict_lan: 'Calls will fail except within your own network: neither STUN nor the relay is reachable.',
    diag_verdict_fail_server: 'Calls will fail: this browser cannot reach the server.',
    diag_no_media: 'Others will not see or hear you until a camera or microphone works.',
    share_link: 'Link to this call',
    relay_only: 'Keep my network address private (connect through the server; may be a little slower)',
    camera_off_self: 'Camera off',
    quality_title: 'Call quality',
    chat_title: 'Chat',
    close: 'Close',
    chat_placeholder: 'Write a message',
    send: 'Send',
    controls: 'Call controls',
    mic: 'Microphone on/off',
    camera: 'Camera on/off',
    screen: 'Share screen',
    chat: 'Chat',
    quality: 'Call quality',
    settings: 'Settings',
    help: 'Keyboard shortcuts',
    more_options: 'More options',
    cap_mic: 'Mic',
    cap_camera: 'Camera',
    cap_screen: 'Share',
    cap_chat: 'Chat',
    cap_quality: 'Quality',
    cap_settings: 'Settings',
    cap_help: 'Help',
    cap_more: 'More',
    cap_hang_up: 'Leave',
    shortcuts: 'Keyboard shortcuts',
    camera_device: 'Camera',
    mic_device: 'Microphone',
    speaker_device: 'Speaker',
    default_device: 'Default',
    done: 'Done',
    reconnecting: 'Connection to the server lost. Reconnecting…',
    server_restarting: 'The server is restarting. Reconnecting…',
    chat_pending: 'Sending…',
    chat_failed: 'Not sent.',
    chat_retry: 'Try again',
    reconnected: 'Reconnected.',
    replaced: 'This call continues in another tab or device.',
    peer_reconnecting: 'Reconnecting…',
    muted: 'Muted',
    screen_failed: 'Could not share the screen. Try again, or choose another window.',
    device_failed: 'Could not switch to that device. Another app may be using it.',
    mic_unavailable: 'No microphone to turn on.',
    camera_unavailable: 'No camera to turn on.',
    new_messages: '{n} new messages',
    ice_restart: 'Reconnecting to {name}…',
    q_in: 'In',
    q_out: 'Out',
    q_loss: 'Loss',
    q_rtt: 'Round trip',
    q_video: 'Video',
    q_codecs: 'Codecs',
    q_path: 'Path',
    q_none: 'No one to measure yet.',
    q_via_server: 'through the server, ',
    q_details: 'Details',
    q_connection: 'Connection',
    q_rating: 'Quality',
    q_good: 'Good',
    q_fair: 'Fair',
    q_poor: 'Poor',
    q_direct_lan: 'Direct, on the same network',
    q_direct: 'Direct, across the internet',
    q_relayed: 'Through the relay server',
    q_sfu: 'Through the server (group call)',
    q_sfu_relayed: 'Through the relay, then the server (group call)',
    sfu_unavailable: 'The server cannot carry this group call right now, so you may not see or hear everyone. Trying again…',
    sfu_reconnecting: 'Reconnecting the group call…',
    pin: 'Pin {name} to the stage',
    unpin: 'Unpin {name}',
    pip: 'Watch {name} in a floating window (picture-in-picture)',
    pip_exit: 'Close the floating window',
    presenting: '{name} is presenting',
    more: '+{n} more',
    more_label: 'Not shown ({n}): {names}',
  },
  ko: {
    tagline: '내 서버에서, 브라우저만으로 하는 영상 통화.',
    start_call: '새 통화 시작',
    or_join: '또는 통화 이름으로 참여',
    room_placeholder: '통화 이름',
    go: '이동',
    bad_room: '글자, 숫자, "-", "_", "." 로 1~64자까지 쓸 수 있어요.',
    https_note: '이 주소는 보안 연결(HTTPS)이 아니라서 브라우저가 카메라를 켜지 않아요. 서버 관리자에게 HTTPS 설정을 부탁하세요.',
    language: '언어',
    lobby_title: '참여할 준비가 되셨나요?',
    who_none: '아직 아무도 없어요.',
    who_one: '{a} 님이 통화 중이에요.',
    who_two: '{a} 님과 {b} 님이 통화 중이에요.',
    who_three: '{a} 님, {b} 님, {c} 님이 통화 중이에요.',
    who_many: '{a} 님, {b} 님 외 {n}명이 통화 중이에요.',
    who_count_one: '1명이 통화 중이에요.',
    who_count: '{n}명이 통화 중이에요.',
    your_name: '이름',
    join: '참여',
    joining: '참여하는 중…',
    guest: '손님',
    you: '나',
    media_checking: '카메라와 마이크를 켜는 중…',
    media_ok: '카메라와 마이크가 켜져 있어요.',
    media_denied: '카메라와 마이크가 차단되어 있어요. 참여해서 보고 들을 수는 있어요. 내 모습과 목소리를 보내려면 주소창에서 허용해 주세요.',
    media_missing: '카메라나 마이크를 찾을 수 없어요. 참여해서 보고 들을 수는 있어요.',
    media_busy: '다른 앱이 카메라나 마이크를 쓰고 있어요. 그 앱을 닫고 새로고침하거나, 참여해서 보고 들을 수 있어요.',
    media_insecure: '브라우저는 HTTPS나 localhost에서만 카메라를 허용해요. 참여해서 보고 들을 수는 있어요.',
    media_failed: '카메라나 마이크를 켤 수 없어요. 참여해서 보고 들을 수는 있어요.',
    media_audio_only: '마이크만 켜져 있어요.',
    media_off: '카메라와 마이크가 꺼져 있어요.',
    media_video_only: '카메라만 켜져 있어요.',
    waiting: '상대를 기다리는 중이에요. 이 링크를 보내 주세요:',
    copy_link: '링크 복사',
    copied: '링크를 복사했어요.',
    connecting_to: '{name} 님과 연결하는 중…',
    peer_joined: '{name} 님이 들어왔어요.',
    peer_left: '{name} 님이 통화에서 나갔어요.',
    peer_lost: '{name} 님의 연결이 끊어졌어요. 다시 들어오기를 기다리는 중…',
    peer_gone: '{name} 님이 돌아오지 않았어요.',
    peer_back: '{name} 님이 다시 연결됐어요.',
    peer_unstable: '연결이 불안정해요…',
    you_presenting: '내 화면을 공유하고 있어요',
    stop_presenting: '공유 중지',
    join_failed: '통화에 참여하지 못했어요. 다시 시도해 주세요.',
    call_failed: '문제가 생겨 통화가 멈췄어요. 다시 참여해 주세요.',
    chat_too_long: '메시지는 1000자까지 쓸 수 있어요.',
    chat_too_fast: '메시지를 너무 빨리 보냈어요. 잠시 후 다시 보내 주세요.',
    chat_rejected: '이 메시지를 보낼 수 없어요.',
    screen_unsupported: '이 브라우저에서는 화면을 공유할 수 없어요.',
    peer_failed: '{name} 님과의 연결이 끊어졌어요.',
    hang_up: '통화 종료',
    you_left: '통화에서 나왔어요.',
    rejoin: '다시 참여',
    home: '처음으로',
    full_title: '이 통화는 가득 찼어요',
    full_text: '이 통화에 더 들어갈 자리가 없어요. 나중에 다시 시도하거나 새 통화를 시작하세요.',
    try_again: '다시 시도',
    server_unreachable: '서버에 연결할 수 없어요. 연결을 확인하고 다시 시도하세요.',
    server_closed: '서버와의 연결이 끊어졌어요.',
    server_shutdown: '서버가 종료되고 있어요.',
    error: '문제가 생겼어요: {message}',
    not_found_title: '여기에는 아무것도 없어요',
    not_found_text: 'webconf가 모르는 페이지나 통화 이름이에요.',
    remote_video: '{name} 님의 영상',
    local_video: '내 카메라',
    diag_title: '내 연결 확인',
    diag_intro: '통화에 필요한 것을 하나씩 확인해요.',
    diag_again: '다시 확인',
    diag_camera: '카메라',
    diag_mic: '마이크',
    diag_websocket: '서버 연결',
    diag_stun: '공인 주소 (STUN)',
    diag_turn_udp: 'UDP 릴레이 (TURN)',
    diag_turn_tcp: 'TCP 릴레이 (TURN)',
    diag_running: '확인 중…',
    diag_pass: '됨',
    diag_warn: '제한됨',
    diag_fail: '안 됨',
    diag_skip: '확인 안 함',
    diag_not_offered: '이 서버는 제공하지 않아요',
    diag_public_address: '다른 사람이 {address}(으)로 연결할 수 있어요',
    diag_no_public_address: '공인 주소를 찾지 못했어요: STUN이 막혔거나 NAT 뒤에 있지 않아요',
    diag_relay_address: '릴레이 {address}',
    diag_no_relay: '릴레이 없음: 네트워크가 막았거나 릴레이가 꺼져 있어요',
    diag_verdict_work: '통화가 돼요: 대부분 바로 연결되고, 나머지는 릴레이를 거쳐요.',
    diag_verdict_relay: '통화가 돼요. 직접 연결을 확인하지 못해서, 일부 통화는 릴레이를 거칠 수 있어요.',
    diag_no_nat: 'NAT 없음: 다른 사람이 {address}(으)로 바로 연결할 수 있어요',
    diag_checking: '확인하는 중… 몇 초 걸려요.',
    diag_verdict_most: '대부분의 네트워크와 통화가 되지만, 엄격한 방화벽 뒤에서는 안 돼요: 릴레이에 닿지 않아요.',
    diag_verdict_lan: '같은 네트워크 안에서만 통화가 돼요: STUN도 릴레이도 닿지 않아요.',
    diag_verdict_fail_server: '통화가 안 돼요: 이 브라우저가 서버에 닿지 못해요.',
    diag_no_media: '카메라나 마이크가 작동해야 다른 사람이 나를 보고 들을 수 있어요.',
    share_link: '이 통화의 링크',
    relay_only: '내 네트워크 주소 숨기기 (서버를 거쳐 연결해요. 조금 느려질 수 있어요)',
    camera_off_self: '카메라 꺼짐',
    quality_title: '통화 품질',
    chat_title: '채팅',
    close: '닫기',
    chat_placeholder: '메시지 쓰기',
    send: '보내기',
    controls: '통화 조작',
    mic: '마이크 켜기/끄기',
    camera: '카메라 켜기/끄기',
    screen: '화면 공유',
    chat: '채팅',
    quality: '통화 품질',
    settings: '설정',
    help: '단축키',
    more_options: '더 많은 옵션',
    cap_mic: '마이크',
    cap_camera: '카메라',
    cap_screen: '공유',
    cap_chat: '채팅',
    cap_quality: '품질',
    cap_settings: '설정',
    cap_help: '도움말',
    cap_more: '더보기',
    cap_hang_up: '나가기',
    shortcuts: '단축키',
    camera_device: '카메라',
    mic_device: '마이크',
    speaker_device: '스피커',
    default_device: '기본값',
    done: '완료',
    reconnecting: '서버와의 연결이 끊어졌어요. 다시 연결하는 중…',
    server_restarting: '서버가 다시 시작하고 있어요. 다시 연결하는 중…',
    chat_pending: '보내는 중…',
    chat_failed: '보내지 못했어요.',
    chat_retry: '다시 보내기',
    reconnected: '다시 연결됐어요.',
    replaced: '이 통화는 다른 탭이나 기기에서 계속되고 있어요.',
    peer_reconnecting: '다시 연결하는 중…',
    muted: '음소거',
    screen_failed: '화면을 공유할 수 없어요. 다시 시도하거나 다른 창을 골라 주세요.',
    device_failed: '그 장치로 바꿀 수 없어요. 다른 앱이 쓰고 있을 수 있어요.',
    mic_unavailable: '켤 마이크가 없어요.',
    camera_unavailable: '켤 카메라가 없어요.',
    new_messages: '새 메시지 {n}개',
    ice_restart: '{name} 님과 다시 연결하는 중…',
    q_in: '받기',
    q_out: '보내기',
    q_loss: '손실',
    q_rtt: '왕복 시간',
    q_video: '영상',
    q_codecs: '코덱',
    q_path: '경로',
    q_none: '아직 측정할 상대가 없어요.',
    q_via_server: '서버 경유, ',
    q_details: '자세히',
    q_connection: '연결',
    q_rating: '품질',
    q_good: '좋음',
    q_fair: '보통',
    q_poor: '나쁨',
    q_direct_lan: '직접 연결 (같은 네트워크)',
    q_direct: '직접 연결 (인터넷)',
    q_relayed: '릴레이 서버 경유',
    q_sfu: '서버 경유 (그룹 통화)',
    q_sfu_relayed: '릴레이와 서버 경유 (그룹 통화)',
    sfu_unavailable: '지금은 서버가 이 그룹 통화를 중계할 수 없어서, 일부 참여자가 보이거나 들리지 않을 수 있어요. 다시 시도하는 중…',
    sfu_reconnecting: '그룹 통화에 다시 연결하는 중…',
    pin: '{name} 크게 보기',
    unpin: '{name} 크게 보기 해제',
    pip: '{name} 님을 작은 창으로 보기 (PIP)',
    pip_exit: '작은 창 닫기',
    presenting: '{name} 님이 화면을 공유하고 있어요',
    more: '+{n}명 더',
    more_label: '화면에 없는 {n}명: {names}',
  },
};

const STORAGE_KEY = 'webconf.lang';

/** @returns {Lang} the chosen language, else the browser's, else English */
export function currentLang() {
  const saved = safeStorage()?.getItem(STORAGE_KEY);
  if (saved === 'en' || saved === 'ko') return saved;
  const preferred = navigator.languages?.length ? navigator.languages : [navigator.language];
  for (const l of preferred) {
    if (/^ko\b/i.test(l)) return 'ko';
    if (/^en\b/i.test(l)) return 'en';
  }
  return 'en';
}

let lang = currentLang();

/** The language the page is shown in now. @returns {Lang} */
export function pageLang() {
  return lang;
}

/**
 * The string `key` in the current language, with {placeholders} filled.
 * @param {keyof typeof STRINGS.en} key
 * @param {Record<string, string | number>} [vars]
 */
export function t(key, vars = {}) {
  const template = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ''));
}

/**
 * Switches language, remembers it, and re-labels the page.
 * @param {Lang} next
 */
export function setLang(next) {
  lang = next;
  safeStorage()?.setItem(STORAGE_KEY, next);
  translatePage();
}

/** Fills every data-i18n* element under `root`. */
export function translatePage(root = document) {
  document.documentElement.lang = lang;
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(/** @type {any} */ (el.getAttribute('data-i18n')));
  }
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.setAttribute('placeholder', t(/** @type {any} */ (el.getAttribute('data-i18n-placeholder'))));
  }
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    const text = t(/** @type {any} */ (el.getAttribute('data-i18n-label')));
    el.setAttribute('aria-label', text);
    el.setAttribute('title', text);
  }
  for (const select of root.querySelectorAll('select.lang')) {
    /** @type {HTMLSelectElement} */ (select).value = lang;
  }
  document.dispatchEvent(new CustomEvent('langchange', { detail: lang }));
}

/** Wires every `select.lang` on the page to switch language. */
export function setupLanguageSwitch() {
  for (const select of document.querySelectorAll('select.lang')) {
    select.addEventListener('change', () => {
      setLang(/** @type {Lang} */ (/** @type {HTMLSelectElement} */ (select).value));
    });
  }
  translatePage();
}

/** localStorage, or null where the browser forbids it (private modes). */
function safeStorage() {
  try {
    return window.localStorage;
  } catch {
    return null;
  }
}
