// Who may act on the page: the indicator in the toolbar and the control section of the side panel
// (ask for / release control; for the owner: the policy, take control, grant or deny requests).
// The server decides; this only shows its state and sends requests.

export class ControlPanel {
  #els;
  #send;
  #notify;
  #stats;
  #me = null;
  #role = null;
  #state = { policy: 'shared', holder: null, requests: [] };
  #names = new Map();

  /**
   * @param els    {indicator, section, policy, request, release, take, requests}
   * @param send   (message) => boolean
   * @param notify (text) => void, a passing notice
   * @param stats  window.cobrowse, where `control` is mirrored for tests
   */
  constructor(els, send, notify, stats) {
    this.#els = els;
    this.#send = send;
    this.#notify = notify;
    this.#stats = stats;
    stats.control = null;
    els.policy.addEventListener('change', () => {
      this.#send({ t: 'control', action: 'policy', policy: els.policy.value });
    });
    els.request.addEventListener('click', () => this.#send({ t: 'control', action: 'request' }));
    els.release.addEventListener('click', () => this.#send({ t: 'control', action: 'release' }));
    els.take.addEventListener('click', () => this.#send({ t: 'control', action: 'take' }));
  }

  hello(msg) {
    this.#me = msg.participant ?? null;
    this.#role = msg.role ?? null;
    this.#render();
  }

  presence(list) {
    this.#names = new Map(list.map((p) => [p.id, p.name]));
    this.#render();
  }

  control(msg) {
    this.#state = {
      policy: msg.policy === 'exclusive' ? 'exclusive' : 'shared',
      holder: typeof msg.holder === 'string' ? msg.holder : null,
      requests: Array.isArray(msg.requests) ? msg.requests.filter((r) => typeof r === 'string') : [],
    };
    this.#stats.control = this.#state;
    if (msg.denied && msg.denied === this.#me) this.#notify('Your request for control was declined.');
    this.#render();
  }

  #name(id) {
    if (id === this.#me) return 'you';
    return this.#names.get(id) ?? id;
  }

  #render() {
    const { policy, holder, requests } = this.#state;
    const els = this.#els;
    const owner = this.#role === 'owner';
    const canInput = owner || this.#role === 'controller';
    const exclusive = policy === 'exclusive';
    els.indicator.textContent = !exclusive
      ? 'Control: everyone'
      : holder ? `Control: ${this.#name(holder)}` : 'Control: nobody';
    els.indicator.dataset.mine = String(!exclusive ? canInput : holder === this.#me);
    els.section.hidden = !canInput;
    els.policy.hidden = !owner;
    els.policy.value = policy;
    const asked = requests.includes(this.#me);
    els.request.hidden = owner || !exclusive || holder === this.#me || asked; // the owner takes
    els.release.hidden = !exclusive || (holder !== this.#me && !asked);
    els.release.textContent = asked ? 'Withdraw request' : 'Release control';
    els.take.hidden = !owner || !exclusive || holder === this.#me;
    // Requests, answerable by the holder or the owner.
    const mayAnswer = exclusive && (owner || holder === this.#me);
    els.requests.replaceChildren(
      ...requests.map((id) => {
        const li = document.createElement('li');
        const who = document.createElement('span');
        who.textContent = `${this.#name(id)} asks for control`;
        li.append(who);
        if (mayAnswer) {
          for (const [action, label] of [['grant', 'Grant'], ['deny', 'Deny']]) {
            const b = document.createElement('button');
            b.type = 'button';
            b.textContent = label;
            b.dataset.action = action;
            b.addEventListener('click', () => this.#send({ t: 'control', action, id }));
            li.append(b);
          }
        }
        return li;
      }),
    );
  }
}
