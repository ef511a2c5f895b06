// Stand-in for a PM2 app: serves on PORT when it has one, else idles.
const http = require('http');
if (process.env.PORT) {
  http.createServer((req, res) => res.end(`${process.pid}\n`)).listen(process.env.PORT);
} else {
  setInterval(() => {}, 1 << 30);
}
process.on('SIGINT', () => process.exit(0));
