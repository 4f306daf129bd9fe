// Redaction against real command lines: each row is an argv as a tool is really run, the exact
// line kappa must show, and the secrets in it. A row fails on a leak (a secret still shown) and
// on an over-redaction (anything else differs from what a user typed).
import { describe, expect, it } from 'vitest';
import { redactCmdline } from '../src/redact.js';

interface Row {
  argv: string[];
  shown: string;
  secrets: string[];
}

const rows: Record<string, Row> = {
  // ---- leaks the issue found ----
  'kubectl --from-literal=password=x': {
    argv: ['kubectl', 'create', 'secret', 'generic', 'db', '--from-literal=password=Pg4ss-Lit1', '--from-literal=user=app'],
    shown: 'kubectl create secret generic db --from-literal=password=*** --from-literal=user=app',
    secrets: ['Pg4ss-Lit1'],
  },
  'docker --env=DB_PASSWORD=x': {
    argv: ['docker', 'run', '--env=DB_PASSWORD=EnvPw_77', '--env=DB_HOST=db', 'app:1'],
    shown: 'docker run --env=DB_PASSWORD=*** --env=DB_HOST=db app:1',
    secrets: ['EnvPw_77'],
  },
  'helm --set=db.password=x': {
    argv: ['helm', 'upgrade', '--install', 'shop', './chart', '--set=db.password=HelmPw9', '--set=replicas=3'],
    shown: 'helm upgrade --install shop ./chart --set=db.password=*** --set=replicas=3',
    secrets: ['HelmPw9'],
  },
  'helm --set a=1,auth.token=x (comma list)': {
    argv: ['helm', 'install', 'x', 'bitnami/redis', '--set', 'architecture=standalone,auth.password=RedisHelm1'],
    shown: 'helm install x bitnami/redis --set architecture=standalone,auth.password=***',
    secrets: ['RedisHelm1'],
  },
  'URL query ?access_token=': {
    argv: ['curl', '-s', 'https://api.example.com/v1/me?access_token=AT0k3nQ&fields=id'],
    shown: 'curl -s https://api.example.com/v1/me?access_token=***&fields=id',
    secrets: ['AT0k3nQ'],
  },
  'presigned S3 URL X-Amz-Signature / X-Amz-Credential': {
    argv: ['wget', 'https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261204&X-Amz-Signature=5ig5ig5ig&X-Amz-Expires=60'],
    shown: 'wget https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60',
    secrets: ['5ig5ig5ig', 'AKIAEXAMPLE'],
  },
  'Azure SAS sig=': {
    argv: ['azcopy', 'copy', 'https://acct.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&sig=S4sSig%3D', '.'],
    shown: 'azcopy copy https://acct.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&sig=*** .',
    secrets: ['S4sSig'],
  },
  'https://ghp_x@github.com (token as user, no colon)': {
    argv: ['git', 'clone', 'https://ghp_R3alTok3nAbc@github.com/org/repo.git'],
    shown: 'git clone https://***@github.com/org/repo.git',
    secrets: ['R3alTok3nAbc'],
  },
  'docker login -p': {
    argv: ['docker', 'login', '-u', 'ci', '-p', 'D0ckerPw', 'registry.example.com'],
    shown: 'docker login -u ci -p *** registry.example.com',
    secrets: ['D0ckerPw'],
  },
  'az login -p': {
    argv: ['az', 'login', '--service-principal', '-u', 'http://app', '-p', 'AzSpPw1', '--tenant', 'contoso.onmicrosoft.com'],
    shown: 'az login --service-principal -u http://app -p *** --tenant contoso.onmicrosoft.com',
    secrets: ['AzSpPw1'],
  },
  'htpasswd -b file user password': {
    argv: ['htpasswd', '-b', '/etc/nginx/.htpasswd', 'admin', 'HtPw1'],
    shown: 'htpasswd -b /etc/nginx/.htpasswd admin ***',
    secrets: ['HtPw1'],
  },
  'htpasswd -nbB user password': {
    argv: ['htpasswd', '-nbB', 'admin', 'HtPw2'],
    shown: 'htpasswd -nbB admin ***',
    secrets: ['HtPw2'],
  },
  'vault login s.x': {
    argv: ['vault', 'login', 's.VaultTok3n1234567890abcd'],
    shown: 'vault login ***',
    secrets: ['VaultTok3n'],
  },
  'vault login -method=userpass password=x': {
    argv: ['vault', 'login', '-method=userpass', 'username=ops', 'password=VaultUp1'],
    shown: 'vault login -method=userpass username=ops password=***',
    secrets: ['VaultUp1'],
  },
  'JSON {"password": …}': {
    argv: ['curl', '-X', 'POST', '-d', '{"user": "ops", "password": "Js0nPw"}', 'http://auth/login'],
    shown: 'curl -X POST -d {"user": "ops", "password": "***"} http://auth/login',
    secrets: ['Js0nPw'],
  },
  'JSON nested token, no spaces': {
    argv: ['aws', 'lambda', 'invoke', '--payload', '{"auth":{"apiKey":"J5nKey"},"n":1}', 'out.json'],
    shown: 'aws lambda invoke --payload {"auth":{"apiKey":"***"},"n":1} out.json',
    secrets: ['J5nKey'],
  },
  'git -c http.extraheader=AUTHORIZATION: basic …': {
    argv: ['git', '-c', 'http.extraheader=AUTHORIZATION: basic eDpHaXRCYXNpYw==', 'fetch', 'origin'],
    shown: 'git -c http.extraheader=AUTHORIZATION: *** fetch origin',
    secrets: ['eDpHaXRCYXNpYw'],
  },

  // ---- over-redactions the issue found: these stay as typed ----
  'git commit --author': {
    argv: ['git', 'commit', '--author', 'Ada Lovelace <ada@example.com>', '-m', 'fix'],
    shown: 'git commit --author Ada Lovelace <ada@example.com> -m fix',
    secrets: [],
  },
  '--pwd /dir': {
    argv: ['runner', '--pwd', '/srv/app', '--jobs', '4'],
    shown: 'runner --pwd /srv/app --jobs 4',
    secrets: [],
  },
  '--tokenizer m': {
    argv: ['python3', 'train.py', '--tokenizer', 'bert-base', '--max-tokens', '512'],
    shown: 'python3 train.py --tokenizer bert-base --max-tokens 512',
    secrets: [],
  },
  '--no-auth server.js keeps the script': {
    argv: ['node', '--no-auth', 'server.js'],
    shown: 'node --no-auth server.js',
    secrets: [],
  },
  'mysql -p mydb: -p prompts, the next word is the database': {
    argv: ['mysql', '-u', 'root', '-p', 'mydb'],
    shown: 'mysql -u root -p mydb',
    secrets: [],
  },

  // ---- kubectl ----
  'kubectl --token=': {
    argv: ['kubectl', '--server=https://10.0.0.1:6443', '--token=eyK8sTok', 'get', 'pods'],
    shown: 'kubectl --server=https://10.0.0.1:6443 --token=*** get pods',
    secrets: ['eyK8sTok'],
  },
  'kubectl config set-credentials --password': {
    argv: ['kubectl', 'config', 'set-credentials', 'admin', '--username=admin', '--password', 'KcPw1'],
    shown: 'kubectl config set-credentials admin --username=admin --password ***',
    secrets: ['KcPw1'],
  },
  'kubectl config set users.x.token VALUE': {
    argv: ['kubectl', 'config', 'set', 'users.ci.token', 'KcSetTok'],
    shown: 'kubectl config set users.ci.token ***',
    secrets: ['KcSetTok'],
  },
  'kubectl create secret docker-registry --docker-password': {
    argv: ['kubectl', 'create', 'secret', 'docker-registry', 'regcred', '--docker-server=r.io', '--docker-username=ci', '--docker-password=RegPw1'],
    shown: 'kubectl create secret docker-registry regcred --docker-server=r.io --docker-username=ci --docker-password=***',
    secrets: ['RegPw1'],
  },
  'kubectl exec -- env X_TOKEN=': {
    argv: ['kubectl', 'exec', 'pod-1', '--', 'env', 'X_TOKEN=ExT0k', 'sh'],
    shown: 'kubectl exec pod-1 -- env X_TOKEN=*** sh',
    secrets: ['ExT0k'],
  },
  'kubectl get pods stays as is': {
    argv: ['kubectl', 'get', 'pods', '-n', 'kube-system', '-o', 'wide', '--sort-by=.metadata.name'],
    shown: 'kubectl get pods -n kube-system -o wide --sort-by=.metadata.name',
    secrets: [],
  },

  // ---- helm ----
  'helm repo add --password': {
    argv: ['helm', 'repo', 'add', 'private', 'https://charts.example.com', '--username', 'ci', '--password', 'HelmRepo1'],
    shown: 'helm repo add private https://charts.example.com --username ci --password ***',
    secrets: ['HelmRepo1'],
  },
  'helm --set-string secret': {
    argv: ['helm', 'install', 'app', './c', '--set-string', 'secrets.apiToken=HelmStr1'],
    shown: 'helm install app ./c --set-string secrets.apiToken=***',
    secrets: ['HelmStr1'],
  },
  'helm registry login --password-stdin keeps the registry': {
    argv: ['helm', 'registry', 'login', 'ghcr.io', '--username', 'ci', '--password-stdin'],
    shown: 'helm registry login ghcr.io --username ci --password-stdin',
    secrets: [],
  },

  // ---- docker / podman ----
  'docker run -e DB_PASSWORD and -p port': {
    argv: ['docker', 'run', '-d', '-p', '5432:5432', '-e', 'POSTGRES_PASSWORD=PgDock1', 'postgres:16'],
    shown: 'docker run -d -p 5432:5432 -e POSTGRES_PASSWORD=*** postgres:16',
    secrets: ['PgDock1'],
  },
  'docker build --build-arg NPM_TOKEN': {
    argv: ['docker', 'build', '--build-arg', 'NPM_TOKEN=npm_BuildArg1', '-t', 'app', '.'],
    shown: 'docker build --build-arg NPM_TOKEN=*** -t app .',
    secrets: ['npm_BuildArg1'],
  },
  'docker login --password-stdin keeps the registry': {
    argv: ['docker', 'login', '--username', 'ci', '--password-stdin', 'registry.example.com'],
    shown: 'docker login --username ci --password-stdin registry.example.com',
    secrets: [],
  },
  'podman login -p glued': {
    argv: ['podman', 'login', '-u', 'ci', '-pPodPw1', 'quay.io'],
    shown: 'podman login -u ci -p*** quay.io',
    secrets: ['PodPw1'],
  },

  // ---- aws / az / gcloud ----
  'aws configure set aws_secret_access_key': {
    argv: ['aws', 'configure', 'set', 'aws_secret_access_key', 'wJalrXUtnFEMI/K7MDENG'],
    shown: 'aws configure set aws_secret_access_key ***',
    secrets: ['wJalrXUtnFEMI'],
  },
  'env AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN': {
    argv: ['env', 'AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE', 'AWS_SECRET_ACCESS_KEY=wJalrSecret1', 'AWS_SESSION_TOKEN=FwoGSess1', 'AWS_REGION=eu-west-1', 'aws', 's3', 'ls'],
    shown: 'env AWS_ACCESS_KEY_ID=*** AWS_SECRET_ACCESS_KEY=*** AWS_SESSION_TOKEN=*** AWS_REGION=eu-west-1 aws s3 ls',
    secrets: ['wJalrSecret1', 'FwoGSess1', 'AKIAIOSFODNN7EXAMPLE'],
  },
  'aws s3 cp stays as is': {
    argv: ['aws', 's3', 'cp', 's3://bucket/key.tar.gz', '/tmp/', '--region', 'us-east-1'],
    shown: 'aws s3 cp s3://bucket/key.tar.gz /tmp/ --region us-east-1',
    secrets: [],
  },
  'az --client-secret': {
    argv: ['az', 'aks', 'get-credentials', '--client-secret', 'AzCs1', '--name', 'prod'],
    shown: 'az aks get-credentials --client-secret *** --name prod',
    secrets: ['AzCs1'],
  },
  'az storage --account-key and connection string': {
    argv: ['az', 'storage', 'blob', 'list', '--connection-string', 'DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AzAk1==;EndpointSuffix=core.windows.net'],
    shown: 'az storage blob list --connection-string DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net',
    secrets: ['AzAk1'],
  },
  'gcloud --access-token-file keeps the path': {
    argv: ['gcloud', 'container', 'clusters', 'list', '--access-token-file=/var/run/token', '--project', 'p1'],
    shown: 'gcloud container clusters list --access-token-file=/var/run/token --project p1',
    secrets: [],
  },
  'gcloud auth with a Google API key in a URL': {
    argv: ['curl', 'https://maps.googleapis.com/maps/api/geocode/json?address=x&key=AIzaSyGoogKey1'],
    shown: 'curl https://maps.googleapis.com/maps/api/geocode/json?address=x&key=***',
    secrets: ['AIzaSyGoogKey1'],
  },

  // ---- databases ----
  'psql URL': {
    argv: ['psql', 'postgresql://app:PsqlPw1@db:5432/shop?sslmode=require'],
    shown: 'psql postgresql://app:***@db:5432/shop?sslmode=require',
    secrets: ['PsqlPw1'],
  },
  'psql conninfo string': {
    argv: ['psql', 'host=db user=app password=PsqlPw2 dbname=shop'],
    shown: 'psql host=db user=app password=*** dbname=shop',
    secrets: ['PsqlPw2'],
  },
  'psql -c with SQL PASSWORD': {
    argv: ['psql', '-h', 'db', '-c', "ALTER ROLE app WITH PASSWORD 'SqlPw1'"],
    shown: "psql -h db -c ALTER ROLE app WITH PASSWORD '***'",
    secrets: ['SqlPw1'],
  },
  'env PGPASSWORD psql': {
    argv: ['env', 'PGPASSWORD=PgEnv1', 'psql', '-h', 'db', '-U', 'app'],
    shown: 'env PGPASSWORD=*** psql -h db -U app',
    secrets: ['PgEnv1'],
  },
  'mysql -pX glued': {
    argv: ['/usr/bin/mysql', '-h', 'db', '-u', 'root', '-pMyPw1', 'shop'],
    shown: '/usr/bin/mysql -h db -u root -p*** shop',
    secrets: ['MyPw1'],
  },
  'mysql --password=X': {
    argv: ['mysql', '--user=root', '--password=MyPw2', 'shop'],
    shown: 'mysql --user=root --password=*** shop',
    secrets: ['MyPw2'],
  },
  'mysql -e IDENTIFIED BY': {
    argv: ['mysql', '-e', "CREATE USER 'app'@'%' IDENTIFIED BY 'MySqlPw3'"],
    shown: "mysql -e CREATE USER 'app'@'%' IDENTIFIED BY '***'",
    secrets: ['MySqlPw3'],
  },
  'env MYSQL_PWD': {
    argv: ['env', 'MYSQL_PWD=MyPwd4', 'mysqldump', 'shop'],
    shown: 'env MYSQL_PWD=*** mysqldump shop',
    secrets: ['MyPwd4'],
  },
  'redis-cli -a': {
    argv: ['redis-cli', '-h', 'cache', '-a', 'RedisPw1', '--no-auth-warning', 'ping'],
    shown: 'redis-cli -h cache -a *** --no-auth-warning ping',
    secrets: ['RedisPw1'],
  },
  'redis-cli --pass and --user': {
    argv: ['redis-cli', '--user', 'app', '--pass', 'RedisPw2', 'info'],
    shown: 'redis-cli --user app --pass *** info',
    secrets: ['RedisPw2'],
  },
  'redis-cli -u redis://:pw@': {
    argv: ['redis-cli', '-u', 'redis://:RedisPw3@cache:6379/0', 'ping'],
    shown: 'redis-cli -u redis://:***@cache:6379/0 ping',
    secrets: ['RedisPw3'],
  },
  'redis-cli AUTH command': {
    argv: ['redis-cli', '-h', 'cache', 'AUTH', 'app', 'RedisPw4'],
    shown: 'redis-cli -h cache AUTH app ***',
    secrets: ['RedisPw4'],
  },
  'mongosh URL with user:pass': {
    argv: ['mongosh', 'mongodb+srv://app:MongoPw1@cluster0.example.net/shop'],
    shown: 'mongosh mongodb+srv://app:***@cluster0.example.net/shop',
    secrets: ['MongoPw1'],
  },

  // ---- curl / wget ----
  'curl -u user:pass': {
    argv: ['curl', '-u', 'bob:CurlPw1', 'https://x.example.com/'],
    shown: 'curl -u bob:*** https://x.example.com/',
    secrets: ['CurlPw1'],
  },
  'curl -H Authorization: Bearer': {
    argv: ['curl', '-sS', '-H', 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.CurlJwtSig', 'https://api/'],
    shown: 'curl -sS -H Authorization: *** https://api/',
    secrets: ['CurlJwtSig'],
  },
  'curl -H X-Api-Key: and a harmless header': {
    argv: ['curl', '-H', 'Accept: application/json', '-H', 'X-Api-Key: CurlKey1', 'https://api/'],
    shown: 'curl -H Accept: application/json -H X-Api-Key: *** https://api/',
    secrets: ['CurlKey1'],
  },
  'curl -d form with password': {
    argv: ['curl', '-d', 'username=ops&password=CurlForm1&remember=1', 'https://login/'],
    shown: 'curl -d username=ops&password=***&remember=1 https://login/',
    secrets: ['CurlForm1'],
  },
  'curl --oauth2-bearer and --cookie': {
    argv: ['curl', '--oauth2-bearer', 'CurlBearer1', '--cookie', 'sessionid=CurlCookie1', 'https://api/'],
    shown: 'curl --oauth2-bearer *** --cookie *** https://api/',
    secrets: ['CurlBearer1', 'CurlCookie1'],
  },
  'wget --user --password and --header': {
    argv: ['wget', '--user=ops', '--password=WgetPw1', '--header=Private-Token: WgetTok1', 'https://gitlab/file'],
    shown: 'wget --user=ops --password=*** --header=Private-Token: *** https://gitlab/file',
    secrets: ['WgetPw1', 'WgetTok1'],
  },
  'wget --http-password': {
    argv: ['wget', '--http-user=ops', '--http-password', 'WgetPw2', 'http://x/'],
    shown: 'wget --http-user=ops --http-password *** http://x/',
    secrets: ['WgetPw2'],
  },
  'wget plain download stays as is': {
    argv: ['wget', '-q', '-O', '/tmp/keyring.gpg', 'https://example.com/keyring.gpg'],
    shown: 'wget -q -O /tmp/keyring.gpg https://example.com/keyring.gpg',
    secrets: [],
  },

  // ---- git ----
  'git clone https://user:token@': {
    argv: ['git', 'clone', 'https://oauth2:glpat-GitLabTok1@gitlab.com/g/p.git'],
    shown: 'git clone https://oauth2:***@gitlab.com/g/p.git',
    secrets: ['GitLabTok1'],
  },
  'git push x-access-token': {
    argv: ['git', 'push', 'https://x-access-token:ghs_GhsTok1@github.com/o/r.git', 'HEAD:main'],
    shown: 'git push https://x-access-token:***@github.com/o/r.git HEAD:main',
    secrets: ['ghs_GhsTok1'],
  },
  'git config credential.helper stays as is': {
    argv: ['git', 'config', '--global', 'credential.helper', 'store'],
    shown: 'git config --global credential.helper store',
    secrets: [],
  },
  'npm config set //registry/:_authToken VALUE': {
    argv: ['npm', 'config', 'set', '//registry.npmjs.org/:_authToken', 'npm_NpmCfgTok1'],
    shown: 'npm config set //registry.npmjs.org/:_authToken ***',
    secrets: ['NpmCfgTok1'],
  },
  'git ssh URL keeps its user': {
    argv: ['git', 'clone', 'ssh://git@github.com/o/r.git'],
    shown: 'git clone ssh://git@github.com/o/r.git',
    secrets: [],
  },

  // ---- ssh ----
  'sshpass -p': {
    argv: ['sshpass', '-p', 'SshPw1', 'ssh', '-o', 'StrictHostKeyChecking=no', 'ops@10.0.0.5'],
    shown: 'sshpass -p *** ssh -o StrictHostKeyChecking=no ops@10.0.0.5',
    secrets: ['SshPw1'],
  },
  'ssh -i key -p port stays as is': {
    argv: ['ssh', '-i', '/home/ops/.ssh/id_ed25519', '-p', '2222', 'ops@bastion'],
    shown: 'ssh -i /home/ops/.ssh/id_ed25519 -p 2222 ops@bastion',
    secrets: [],
  },

  // ---- java -D ----
  'java -Djavax.net.ssl.keyStorePassword': {
    argv: ['java', '-Djavax.net.ssl.keyStorePassword=JksPw1', '-Xmx512m', '-jar', 'app.jar'],
    shown: 'java -Djavax.net.ssl.keyStorePassword=*** -Xmx512m -jar app.jar',
    secrets: ['JksPw1'],
  },
  'java -Dspring.datasource.password and URL': {
    argv: ['java', '-Dspring.datasource.url=jdbc:postgresql://db:5432/shop', '-Dspring.datasource.password=SpringPw1', '-jar', 'shop.jar'],
    shown: 'java -Dspring.datasource.url=jdbc:postgresql://db:5432/shop -Dspring.datasource.password=*** -jar shop.jar',
    secrets: ['SpringPw1'],
  },
  'java app with its own flags stays as is': {
    argv: ['/usr/lib/jvm/java-21/bin/java', '-XX:+UseG1GC', '-Dfile.encoding=UTF-8', '-cp', '/app/lib/*', 'com.example.Main', '--server.port=8080'],
    shown: '/usr/lib/jvm/java-21/bin/java -XX:+UseG1GC -Dfile.encoding=UTF-8 -cp /app/lib/* com.example.Main --server.port=8080',
    secrets: [],
  },

  // ---- env ----
  'env X_TOKEN= and GITHUB_TOKEN=': {
    argv: ['env', 'X_TOKEN=XTok1', 'GITHUB_TOKEN=ghp_EnvGh1', 'PATH=/usr/bin', 'make'],
    shown: 'env X_TOKEN=*** GITHUB_TOKEN=*** PATH=/usr/bin make',
    secrets: ['XTok1', 'EnvGh1'],
  },
  'env PWD= is the working directory': {
    argv: ['env', 'PWD=/srv/app', 'OLDPWD=/root', 'node', 'index.js'],
    shown: 'env PWD=/srv/app OLDPWD=/root node index.js',
    secrets: [],
  },
  'env REDISCLI_AUTH': {
    argv: ['env', 'REDISCLI_AUTH=RcAuth1', 'redis-cli', 'ping'],
    shown: 'env REDISCLI_AUTH=*** redis-cli ping',
    secrets: ['RcAuth1'],
  },

  // ---- shells ----
  'sh -c with several secrets': {
    argv: ['sh', '-c', 'PGPASSWORD=ShPw1 psql -h db; curl -u a:ShPw2 http://x && mysql -pShPw3 s'],
    shown: 'sh -c PGPASSWORD=*** psql -h db; curl -u a:*** http://x && mysql -p*** s',
    secrets: ['ShPw1', 'ShPw2', 'ShPw3'],
  },
  'bash -lc nested quotes': {
    argv: ['bash', '-lc', `sh -c "docker login -u ci -p 'NestPw1' r.io"`],
    shown: `bash -lc sh -c "docker login -u ci -p '***' r.io"`,
    secrets: ['NestPw1'],
  },
  'sudo -u postgres psql keeps everything': {
    argv: ['sudo', '-u', 'postgres', 'psql', '-d', 'shop'],
    shown: 'sudo -u postgres psql -d shop',
    secrets: [],
  },

  // ---- well-known token formats anywhere ----
  'a GitHub token as a positional argument': {
    argv: ['gh-release', 'upload', 'v1.0', 'ghp_Positional1234567890abcdef', 'dist/'],
    shown: 'gh-release upload v1.0 *** dist/',
    secrets: ['Positional1234567890'],
  },
  'a Slack token in a webhook tool': {
    argv: ['notify', 'xoxb-1234-5678-SlackTok1', '#ops'],
    shown: 'notify *** #ops',
    secrets: ['SlackTok1'],
  },
  'a JWT as a positional argument': {
    argv: ['grpcurl', '-rpc-header', 'x: y', 'eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJrIn0.JwtSig1abc', 'svc:443'],
    shown: 'grpcurl -rpc-header x: y *** svc:443',
    secrets: ['JwtSig1abc'],
  },

  // ---- things that must stay readable ----
  'node server with a script': {
    argv: ['node', '/app/dist/server.js', '--port=3000'],
    shown: 'node /app/dist/server.js --port=3000',
    secrets: [],
  },
  'nginx -g': {
    argv: ['nginx', '-g', 'daemon off;'],
    shown: 'nginx -g daemon off;',
    secrets: [],
  },
  'python keyboard / keyspace / primary key flags': {
    argv: ['python3', 'load.py', '--keyspace', 'shop', '--primary-key', 'id', '--public-key', '/etc/pub.pem'],
    shown: 'python3 load.py --keyspace shop --primary-key id --public-key /etc/pub.pem',
    secrets: [],
  },
  'token lifetimes and session names are not secrets': {
    argv: ['kube-apiserver', '--service-account-max-token-expiration=48h', '--authorization-mode=Node,RBAC', '--token-ttl', '1h'],
    shown: 'kube-apiserver --service-account-max-token-expiration=48h --authorization-mode=Node,RBAC --token-ttl 1h',
    secrets: [],
  },
  'envoy with a config path': {
    argv: ['envoy', '-c', '/etc/envoy/envoy.yaml', '--service-node', 'sidecar~10.0.0.1', '--log-level', 'info'],
    shown: 'envoy -c /etc/envoy/envoy.yaml --service-node sidecar~10.0.0.1 --log-level info',
    secrets: [],
  },
};

describe('redaction of real command lines', () => {
  const names = Object.keys(rows);
  it('has at least 60 real command lines', () => {
    expect(names.length).toBeGreaterThanOrEqual(60);
  });

  it('leaks no secret in any of them', () => {
    const leaks: string[] = [];
    for (const [name, row] of Object.entries(rows)) {
      const shown = redactCmdline(row.argv);
      for (const secret of row.secrets) if (shown.includes(secret)) leaks.push(`${name}: ${secret} in ${shown}`);
    }
    expect(leaks).toEqual([]);
  });

  for (const [name, row] of Object.entries(rows)) {
    it(`shows ${name} as typed, secrets hidden`, () => {
      expect(redactCmdline(row.argv)).toBe(row.shown);
    });
  }
});
