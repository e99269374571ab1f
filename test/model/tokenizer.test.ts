import { test } from 'node:test'
import assert from 'node:assert/strict'
import { TextTokenizer, wordLevelTokenizer } from '../../src/model/index.ts'
import { extractChatTemplate } from '../../src/model/tokenizer.ts'

test('tokenizer.json encodes and decodes; the chat template renders with bos and generation prompt', () => {
  const template = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant', 'system'] %}{{ raise_exception('bad role') }}{% endif %}[{{ m.role }}] {{ m.content }} {% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
  const tokenizer = new TextTokenizer(JSON.stringify(wordLevelTokenizer(32)), { bos_token: '<s>', eos_token: { content: '</s>' } }, template)
  assert.deepEqual(tokenizer.encode('t5 t7 t31'), [5, 7, 31])
  assert.equal(tokenizer.decode([5, 7]), 't5 t7')
  assert.equal(tokenizer.decode([1, 5, 2]), 't5')
  assert.equal(tokenizer.tokenId('t9'), 9)
  assert.equal(tokenizer.renderChat([{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }]), '<s>[system] be brief [user] hi [assistant]')
  assert.throws(() => tokenizer.renderChat([{ role: 'tool' as 'user', content: 'x' }]), { code: 'ERR_INVALID_INPUT' })
  assert.throws(() => new TextTokenizer('{', {}, null), { code: 'ERR_MODEL_CONFIG' })
  assert.throws(() => new TextTokenizer(JSON.stringify(wordLevelTokenizer(8)), {}, '{% for %}'), { code: 'ERR_MODEL_CONFIG' })
})

test('chat templates come from chat_template.jinja, a string, or the default of a named list', () => {
  assert.equal(extractChatTemplate({ chat_template: 'a' }, 'file'), 'file')
  assert.equal(extractChatTemplate({ chat_template: 'a' }, null), 'a')
  assert.equal(extractChatTemplate({ chat_template: [{ name: 'tool_use', template: 't' }, { name: 'default', template: 'd' }] }, null), 'd')
  assert.equal(extractChatTemplate({}, null), null)
})

test('a word-level vocabulary maps out-of-vocabulary words to its unknown token', () => {
  const json = JSON.stringify({
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: null,
    decoder: null,
    model: { type: 'WordLevel', vocab: { '<unk>': 0, alpha: 1, beta: 2 }, unk_token: '<unk>' }
  })
  const tokenizer = new TextTokenizer(json)
  assert.deepEqual(tokenizer.encode('alpha zeta beta'), [1, 0, 2])
})
