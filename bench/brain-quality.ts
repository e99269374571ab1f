/**
 * Retrieval quality: dialogue turns as memories, questions whose evidence turns are known.
 *
 * A seeded generator writes multi-session conversations between a user and an assistant. Each
 * session mixes small talk, assistant replies that echo the topic (hard negatives), other
 * people's news that look like the user's (distractors) and, now and then, a user turn that states
 * a fact. Facts can change in later sessions (a move, a new job). Each question asks about one
 * fact in other words than the evidence: paraphrases, other word forms, synonyms; for a changed
 * fact the evidence is the latest statement.
 *
 * Measured: recall@10 of the evidence turns for plain FTS5 BM25 (default unicode61 tokenizer, the
 * question's words OR-ed, ordered by bm25) and for the brain's recall on the same turns, plus the
 * brain with its fingerprint channel switched off, to show what each part contributes.
 *
 *   node bench/brain-quality.ts [--conversations 20] [--sessions 30] [--seed 7] [--json]
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { createBrain, type RecallTuning } from '../src/brain/index.ts'
import { generateEd25519, identityFromKeyPair } from '../src/identity/index.ts'
import { benchFlags, pick, progress, report, seededRandom, type Cell } from './lib/index.ts'

const flags = benchFlags({
  conversations: { default: '20', description: 'conversations (one user each, its own brain)' },
  sessions: { default: '30', description: 'sessions per conversation' },
  seed: { default: '7', description: 'dataset seed' },
  debug: { description: 'print the questions the brain misses (any value)' }
})
const sessionCount = Number(flags.values.sessions)
const random = seededRandom(Number(flags.values.seed))

// --- slot values
const NAMES = ['Maya', 'Leo', 'Nina', 'Omar', 'Priya', 'Jonas', 'Elena', 'Kofi', 'Sara', 'Tomás', 'Aiko', 'Ruth', 'Ivan', 'Zoe', 'Mateo', 'Lena']
const PETS = [['dog', 'beagle'], ['dog', 'greyhound'], ['dog', 'border collie'], ['cat', 'Maine Coon'], ['cat', 'Siamese'], ['parrot', 'African grey'], ['rabbit', 'Holland lop']] as const
const PET_NAMES = ['Pixel', 'Biscuit', 'Mochi', 'Ziggy', 'Pepper', 'Nacho', 'Luna', 'Waffles', 'Juniper', 'Bolt']
const ROLES = ['data engineer', 'product designer', 'nurse practitioner', 'backend developer', 'sales manager', 'research scientist', 'pharmacist']
const COMPANIES = ['Northwind Labs', 'Helios Health', 'Quarry Robotics', 'Bluefin Analytics', 'Tidewater Bank', 'Lumen Studios', 'Cobalt Freight']
const CITIES = ['Lisbon', 'Montreal', 'Kyoto', 'Denver', 'Edinburgh', 'Valencia', 'Austin', 'Copenhagen', 'Melbourne', 'Seoul', 'Porto', 'Vancouver']
const MONTHS = ['January', 'March', 'April', 'June', 'August', 'September', 'October', 'December']
const HOBBIES = ['pottery', 'salsa dancing', 'bouldering', 'watercolor painting', 'cello', 'Italian cooking', 'woodworking', 'sourdough baking']
const WEEKDAYS = ['Monday', 'Tuesday', 'Wednesday', 'Thursday']
const FOODS = ['peanuts', 'shellfish', 'sesame', 'gluten', 'kiwi', 'eggs']
const CARS = ['Subaru Outback', 'Honda Civic', 'Toyota Prius', 'Volvo V60', 'Mazda CX-5', 'Kia Niro']
const BOOKS = ['The Left Hand of Darkness', 'Middlemarch', 'Project Hail Mary', 'The Overstory', 'Piranesi', 'Station Eleven']
const PROJECTS = ['Atlas', 'Nimbus', 'Orchid', 'Keystone', 'Falcon', 'Meridian']
const RELATIVES = ['daughter', 'son', 'niece', 'nephew']
const HEALTH = ['salt', 'caffeine', 'sugar', 'alcohol', 'red meat']
const DRINKS = ['oat milk flat white', 'green tea', 'cold brew', 'chai latte', 'espresso']

interface Fact {
  evidence: string[]
  questions: string[]
}

/** Each fact kind: evidence phrasings (user turns) and question phrasings, from the same slots. */
const FACTS: Array<() => Fact> = [
  () => {
    const [species, breed] = pick(random, PETS)
    const name = pick(random, PET_NAMES)
    return {
      evidence: [`We finally adopted a ${breed} from the shelter last weekend and named ${species === 'cat' ? 'her' : 'him'} ${name}.`,
        `Adopting ${name} was the best decision, ${breed}s are such funny animals.`],
      questions: [`What did I name the ${species} I adopted?`, `What's the name of my new ${species} from the shelter?`, `Which breed is the pet we adopted recently?`]
    }
  },
  () => {
    const role = pick(random, ROLES)
    const company = pick(random, COMPANIES)
    return {
      evidence: [`Big news: I accepted the offer and I'm starting as a ${role} at ${company} on Monday.`,
        `First week as a ${role} at ${company} went well, the team is lovely.`],
      questions: [`Which company hired me?`, `Where did I start working recently?`, `What is my new role at work?`]
    }
  },
  () => {
    const city = pick(random, CITIES)
    const month = pick(random, MONTHS)
    return {
      evidence: [`My sister is getting married in ${city}, so we're flying out there in ${month}.`,
        `We booked the flights to ${city} for my sister's wedding in ${month}.`],
      questions: [`Which city am I travelling to for the wedding?`, `When is my sister's wedding trip?`, `Where is my sister's marriage taking place?`]
    }
  },
  () => {
    const hobby = pick(random, HOBBIES)
    const day = pick(random, WEEKDAYS)
    return {
      evidence: [`I signed up for ${hobby} classes every ${day} evening at the community center.`,
        `${day} ${hobby} class was fun again, I'm slowly improving.`],
      questions: [`What class do I take on ${day}s?`, `Which hobby did I sign up for at the community centre?`, `What do I do on ${day} evenings?`]
    }
  },
  () => {
    const food = pick(random, FOODS)
    return {
      evidence: [`Please remember I'm allergic to ${food}, it can get pretty serious.`,
        `Any recipe suggestions are fine as long as there's no ${food}, because of my allergy.`],
      questions: [`What food allergy do I have?`, `Which ingredient should recipes for me avoid?`, `What am I allergic to?`]
    }
  },
  () => {
    const car = pick(random, CARS)
    const miles = 20 + Math.floor(random() * 60)
    return {
      evidence: [`I finally bought a used ${car} with only ${miles},000 miles on it.`,
        `The ${car} we purchased last week drives really smoothly on the highway.`],
      questions: [`What car did I buy?`, `Which vehicle did we purchase?`, `How many miles were on my used car?`]
    }
  },
  () => {
    const thing = pick(random, HEALTH)
    return {
      evidence: [`My doctor told me to cut back on ${thing} because my blood pressure was high at the checkup.`,
        `Trying to reduce ${thing} like the doctor said, it's harder than I expected.`],
      questions: [`What did my doctor advise me to cut down on?`, `Why am I reducing ${thing}?`, `What did the physician say at my checkup?`]
    }
  },
  () => {
    const book = pick(random, BOOKS)
    return {
      evidence: [`I'm halfway through ${book} and honestly can't put it down.`,
        `Finished another chapter of ${book} last night before bed.`],
      questions: [`Which book am I reading at the moment?`, `What novel did I say I couldn't put down?`, `What have I been reading before bed?`]
    }
  },
  () => {
    const project = pick(random, PROJECTS)
    const month = pick(random, MONTHS)
    return {
      evidence: [`Ugh, the ${project} launch got pushed back to ${month} because of the security review.`,
        `We're now targeting ${month} for ${project} after the review delays.`],
      questions: [`When is the ${project} launch now?`, `Why was the ${project} release delayed?`, `What is the new date for launching ${project}?`]
    }
  },
  () => {
    const relative = pick(random, RELATIVES)
    const name = pick(random, NAMES)
    const age = 4 + Math.floor(random() * 12)
    return {
      evidence: [`My ${relative} ${name} turns ${age} next month and wants a dinosaur party.`,
        `Planning ${name}'s ${age}th birthday, any ideas for a dinosaur theme?`],
      questions: [`How old is my ${relative} turning?`, `What theme does ${name} want for the birthday?`, `When is ${name}'s birthday party?`]
    }
  },
  () => {
    const drink = pick(random, DRINKS)
    return {
      evidence: [`My usual order at the café is a ${drink}, nothing fancy.`,
        `Grabbed my morning ${drink} before the standup.`],
      questions: [`What's my usual coffee shop order?`, `What do I drink in the mornings?`, `Which drink do I usually get at the cafe?`]
    }
  }
]

/** Facts that change later: the question is about the latest statement. */
function movingFact (): { first: string, later: string, questions: string[] } {
  const [a, b] = [pick(random, CITIES), pick(random, CITIES)]
  return {
    first: `We've lived in ${a} for six years now and I love the neighborhood.`,
    later: `We signed the lease, we're relocating to ${b === a ? CITIES[(CITIES.indexOf(a) + 1) % CITIES.length] : b} at the end of the month!`,
    questions: [`Which city am I moving to?`, `Where are we relocating?`, `Where will I be living after the move?`]
  }
}

const INGREDIENTS = ['chickpeas', 'spinach', 'leftover rice', 'mushrooms', 'salmon', 'tofu', 'sweet potatoes', 'lentils']
const TASKS = ['the quarterly report', 'my tax forms', 'a cover letter', 'the slide deck', 'a birthday card', 'the budget spreadsheet']
const THINGS = ['my laptop fan', 'the dishwasher', 'my phone battery', 'the bathroom faucet', 'our router', 'the printer']
const TOPICS = ['history', 'true crime', 'economics', 'science', 'comedy', 'language learning']
const SMALL_TALK: Array<() => string> = [
  () => pick(random, ['Thanks, that is really helpful.', 'Haha, fair enough.', 'That makes sense, thank you.', 'Okay, got it.', 'Perfect, thanks!']),
  () => pick(random, ['Good morning!', 'Hi again!', 'Hey, quick question.', 'Back again with another one.']) + ' ' + pick(random, ['Hope your day is going well.', 'Long day today.', 'Busy week ahead.']),
  () => `What should I cook for dinner tonight? I have ${pick(random, INGREDIENTS)} and ${pick(random, INGREDIENTS)}.`,
  () => `Can you recommend a ${pick(random, TOPICS)} podcast for my commute?`,
  () => `Can you help me finish ${pick(random, TASKS)} before ${pick(random, WEEKDAYS)}?`,
  () => `${pick(random, THINGS)} is acting up again, any idea how to fix it?`,
  () => `Any tips for ${pick(random, ['sleeping better', 'staying focused', 'running in the cold', 'learning vocabulary', 'keeping plants alive'])}?`,
  () => `Can you explain ${pick(random, ['compound interest', 'how vaccines work', 'what a mortgage point is', 'the difference between TCP and UDP', 'how tides work'])} more simply?`,
  () => `The weather is ${pick(random, ['terrible', 'gorgeous', 'so humid', 'freezing'])} today, ${pick(random, ['rain all day', 'not a cloud', 'I stayed inside', 'perfect for a walk'])}.`,
  () => `Could you draft a polite email ${pick(random, ['declining a meeting', 'asking for an extension', 'thanking a client', 'following up on an invoice'])}?`,
  () => `I had a long day at work, ${pick(random, ['honestly exhausted', 'too many meetings', 'but we shipped the fix', 'my inbox is a mess'])}.`,
  () => `Remind me what we talked about ${pick(random, ['last time', 'on Monday', 'earlier this week'])}?`,
  () => `How long should I ${pick(random, ['boil an egg for a soft yolk', 'rest a steak', 'proof bread dough', 'steep green tea'])}?`
]

function assistantEcho (turn: string): string {
  const openers = ['That sounds great!', 'Congratulations!', 'Oh, how exciting.', 'Thanks for sharing that.', 'Good to know.']
  const words = turn.replace(/[^A-Za-z' ]/g, ' ').split(/\s+/).filter((w) => w.length > 5)
  const echo = words.slice(0, 3).join(', ')
  return `${pick(random, openers)} ${echo.length > 0 ? `About ${echo}: ` : ''}let me know if you want suggestions, a plan, or reminders for any of it.`
}

function distractor (): string {
  const name = pick(random, NAMES)
  const options = [
    `My coworker ${name} adopted a ${pick(random, PETS)[1]} too, they keep sending photos.`,
    `${name} just moved to ${pick(random, CITIES)} for a new job at ${pick(random, COMPANIES)}.`,
    `My friend ${name} is allergic to ${pick(random, FOODS)} so we skipped the restaurant.`,
    `${name} recommended ${pick(random, BOOKS)} but I haven't started it.`,
    `My neighbor bought a ${pick(random, CARS)} and parks it in front of our house.`,
    `${name}'s wedding was in ${pick(random, CITIES)} last year, beautiful venue.`,
    `Our manager wants weekly updates on ${pick(random, PROJECTS)} from now on.`,
    `${name} takes ${pick(random, HOBBIES)} lessons and keeps inviting me.`
  ]
  return pick(random, options)
}

interface Turn { id: number, session: number, speaker: 'user' | 'assistant', text: string, date: string }
interface Question { text: string, evidence: number[], kind: string }
interface Conversation { turns: Turn[], questions: Question[] }

/**
 * One user's conversation with the assistant over `sessions` sessions: every fact kind once
 * (stated once or twice), one move (an old city, later a new one), and everything around it.
 */
function conversation (sessions: number): Conversation {
  const turns: Turn[] = []
  const questions: Question[] = []
  const start = Date.parse('2024-01-08T09:00:00Z')
  // what each session will say, decided up front: fact statements land in random sessions
  const planned = new Map<number, Array<{ text: string, onWritten: (id: number) => void }>>()
  const plan = (session: number, text: string, onWritten: (id: number) => void): void => {
    const list = planned.get(session) ?? []
    list.push({ text, onWritten })
    planned.set(session, list)
  }
  for (const makeFact of FACTS) {
    const fact = makeFact()
    const evidence: number[] = []
    const first = Math.floor(random() * sessions)
    plan(first, fact.evidence[0], (id) => evidence.push(id))
    if (random() < 0.5 && first + 1 < sessions) plan(first + 1 + Math.floor(random() * (sessions - first - 1)), fact.evidence[1], (id) => evidence.push(id))
    const asked = fact.questions.slice().sort(() => random() - 0.5).slice(0, 2)
    for (const text of asked) questions.push({ text, evidence, kind: 'fact' })
  }
  const move = movingFact()
  const movedAt = 1 + Math.floor(random() * (sessions - 1))
  plan(Math.floor(random() * movedAt), move.first, () => {})
  const moveEvidence: number[] = []
  plan(movedAt, move.later, (id) => moveEvidence.push(id))
  for (const text of move.questions.slice(0, 2)) questions.push({ text, evidence: moveEvidence, kind: 'changed fact' })

  const add = (session: number, speaker: Turn['speaker'], text: string): number => {
    const id = turns.length
    turns.push({ id, session, speaker, text, date: new Date(start + session * 3 * 86_400_000 + id * 60_000).toISOString() })
    return id
  }
  for (let s = 0; s < sessions; s++) {
    const length = 10 + Math.floor(random() * 14)
    const statements = planned.get(s) ?? []
    const slots = new Map<number, typeof statements[number]>()
    for (const statement of statements) {
      let slot = Math.floor(random() * length)
      while (slots.has(slot)) slot = (slot + 1) % length
      slots.set(slot, statement)
    }
    for (let i = 0; i < length; i++) {
      const statement = slots.get(i)
      if (statement !== undefined) {
        const id = add(s, 'user', statement.text)
        statement.onWritten(id)
        add(s, 'assistant', assistantEcho(statement.text))
      } else if (random() < 0.15) {
        const id = add(s, 'user', distractor())
        if (random() < 0.5) add(s, 'assistant', assistantEcho(turns[id].text))
      } else {
        const text = pick(random, SMALL_TALK)()
        add(s, 'user', text)
        if (random() < 0.5) add(s, 'assistant', assistantEcho(text))
      }
    }
  }
  return { turns, questions }
}

// --- systems under test
const K = 10

function plainBm25 (turns: Turn[]): (question: string) => number[] {
  const db = new Database(':memory:')
  db.exec('CREATE VIRTUAL TABLE t USING fts5 (content)')
  const insert = db.prepare('INSERT INTO t (rowid, content) VALUES (?, ?)')
  db.transaction(() => { for (const turn of turns) insert.run(turn.id + 1, turn.text) })()
  const search = db.prepare(`SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t) LIMIT ${K}`)
  return (question) => {
    const words = question.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter((w) => w.length > 0)
    if (words.length === 0) return []
    return (search.all(words.map((w) => `"${w}"`).join(' OR ')) as Array<{ rowid: number }>).map((r) => r.rowid - 1)
  }
}

async function brainSystem (turns: Turn[], tuning: Partial<RecallTuning>, expand = false): Promise<{ ask: (question: string) => number[], close: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'permagent-bench-quality-'))
  const brain = createBrain({ dataDir: dir, identity: await identityFromKeyPair(generateEd25519()), durability: 'normal', recall: tuning })
  await brain.start()
  const result = brain.rememberMany(turns.map((turn) => ({ content: turn.text, kind: 'dialogue', topic: `session-${turn.session}`, tags: [turn.speaker], validFrom: turn.date })))
  const turnById = new Map(result.ids.map((id, index) => [id, index]))
  return {
    ask: (question) => brain.recall(question, { limit: K, expand }).hits.map((hit) => turnById.get(hit.id) as number),
    close: async () => { await brain.stop(); rmSync(dir, { recursive: true, force: true }) }
  }
}

function recallAt (retrieved: number[], evidence: number[]): number {
  return evidence.filter((e) => retrieved.includes(e)).length / evidence.length
}

const conversationCount = Number(flags.values.conversations)
const conversations = Array.from({ length: conversationCount }, () => conversation(sessionCount))
const totalTurns = conversations.reduce((n, c) => n + c.turns.length, 0)
const totalQuestions = conversations.reduce((n, c) => n + c.questions.length, 0)
progress(`${conversationCount} conversations, ${totalTurns} turns, ${totalQuestions} questions`)

const systemNames = ['plain FTS5 BM25', 'brain recall', 'brain recall, fingerprints off', 'brain recall, expand (feedback)']
const kinds = ['fact', 'changed fact']
const scores = new Map<string, Array<{ kind: string, score: number }>>(systemNames.map((n) => [n, []]))
for (const c of conversations) {
  const systems: Array<{ name: string, ask: (q: string) => number[], close?: () => Promise<void> }> = [
    { name: systemNames[0], ask: plainBm25(c.turns) },
    { name: systemNames[1], ...await brainSystem(c.turns, {}) },
    { name: systemNames[2], ...await brainSystem(c.turns, { fingerprintWeight: 0, bm25Weight: 1, collapseNearDuplicates: false }) },
    { name: systemNames[3], ...await brainSystem(c.turns, {}, true) }
  ]
  for (const system of systems) {
    for (const q of c.questions) {
      const score = recallAt(system.ask(q.text), q.evidence)
      if (flags.values.debug !== undefined && system.name === systemNames[1] && score < 1) progress(`MISS ${q.text} || ${q.evidence.map((e) => c.turns[e].text).join(' | ')}`)
      scores.get(system.name)?.push({ kind: q.kind, score })
    }
    await system.close?.()
  }
}
const mean = (list: number[]): number => list.reduce((a, b) => a + b, 0) / Math.max(1, list.length)
const results = systemNames.map((name) => {
  const list = scores.get(name) ?? []
  return {
    system: name,
    recallAt10: mean(list.map((s) => s.score)),
    byKind: Object.fromEntries(kinds.map((kind) => [kind, mean(list.filter((s) => s.kind === kind).map((s) => s.score))]))
  }
})

const rows: Cell[][] = results.map((r) => [r.system, (r.recallAt10 * 100).toFixed(1) + ' %', ...kinds.map((k) => (r.byKind[k] * 100).toFixed(1) + ' %')])
report(flags, { benchmark: 'brain-quality', seed: Number(flags.values.seed), conversations: conversationCount, sessionsPerConversation: sessionCount, turns: totalTurns, questions: totalQuestions, k: K, results }, [
  { title: `recall@${K} of evidence turns (${conversationCount} conversations, ${totalTurns} dialogue turns, ${totalQuestions} questions)`, headers: ['system', `recall@${K}`, ...kinds], rows }
])
