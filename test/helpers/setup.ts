// Loaded by mocha before any test file (.mocharc.json): the tests' environment comes from
// `.env-test`, never from a developer's `.env`.
import { config } from 'dotenv';

config({ path: new URL('../../.env-test', import.meta.url).pathname, quiet: true });
