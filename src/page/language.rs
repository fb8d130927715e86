//! The languages of the built-in pages: each one's sentences, and which a
//! browser's `Accept-Language` picks (English when none of them).

/// A language the built-in pages speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// English, also the fallback.
    En,
    /// German.
    De,
    /// French.
    Fr,
    /// Spanish.
    Es,
    /// Italian.
    It,
    /// Portuguese.
    Pt,
    /// Dutch.
    Nl,
    /// Polish.
    Pl,
    /// Turkish.
    Tr,
    /// Swedish.
    Sv,
    /// Japanese.
    Ja,
    /// Chinese (simplified).
    Zh,
}

impl Language {
    /// Every language, the fallback first.
    pub const ALL: [Language; 12] = [
        Language::En,
        Language::De,
        Language::Fr,
        Language::Es,
        Language::It,
        Language::Pt,
        Language::Nl,
        Language::Pl,
        Language::Tr,
        Language::Sv,
        Language::Ja,
        Language::Zh,
    ];

    /// The language's code, as in `Accept-Language` and the config.
    pub fn code(self) -> &'static str {
        self.texts().lang
    }

    /// The language with this code (`room.language`).
    pub fn parse(code: &str) -> Option<Language> {
        Language::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The language the browser prefers among ours (by `q`), English otherwise.
    pub fn negotiate(accept_language: Option<&str>) -> Language {
        let mut best = (Language::En, -1.0f32);
        for part in accept_language.unwrap_or_default().split(',') {
            let mut pieces = part.split(';');
            let tag = pieces.next().unwrap_or_default().trim();
            let primary = tag.split('-').next().unwrap_or_default();
            let Some(lang) = Language::ALL
                .into_iter()
                .find(|l| primary.eq_ignore_ascii_case(l.code()))
            else {
                continue;
            };
            let q = pieces
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            if q > best.1 {
                best = (lang, q);
            }
        }
        best.0
    }

    pub(super) fn texts(self) -> &'static Texts {
        match self {
            Language::En => &EN,
            Language::De => &DE,
            Language::Fr => &FR,
            Language::Es => &ES,
            Language::It => &IT,
            Language::Pt => &PT,
            Language::Nl => &NL,
            Language::Pl => &PL,
            Language::Tr => &TR,
            Language::Sv => &SV,
            Language::Ja => &JA,
            Language::Zh => &ZH,
        }
    }
}

/// The user-visible sentences of a page in one language.
pub(super) struct Texts {
    pub(super) lang: &'static str,
    pub(super) title: &'static str,
    pub(super) queued_heading: &'static str,
    pub(super) queued: &'static str,
    pub(super) paused: &'static str,
    pub(super) full_heading: &'static str,
    pub(super) full: &'static str,
    pub(super) maintenance_heading: &'static str,
    pub(super) maintenance: &'static str,
    pub(super) unavailable: &'static str,
    pub(super) position: &'static str,
    pub(super) wait: &'static str,
    pub(super) note: &'static str,
    pub(super) soon: &'static str,
    pub(super) about: &'static str,
    pub(super) minute: &'static str,
    pub(super) minutes: &'static str,
    /// Between the number and the unit: a space, or none (ja, zh).
    pub(super) sep: &'static str,
    pub(super) retry: &'static str,
    pub(super) admitted: &'static str,
    pub(super) no_cookies_heading: &'static str,
    pub(super) no_cookies: &'static str,
    pub(super) limited_heading: &'static str,
    pub(super) limited: &'static str,
    pub(super) checking: &'static str,
    /// In place of the wait when it cannot be told (longer than a day).
    pub(super) unknown_wait: &'static str,
    /// After a wait that rests on `avg_session`, not on measurements
    /// (`waitKnown: false`).
    pub(super) first_estimate: &'static str,
}

pub(super) const EN: Texts = Texts {
    lang: "en",
    title: "Waiting room",
    queued_heading: "You are in line",
    queued: "The site is busy right now. You keep your place and will be let in automatically.",
    paused: "Admissions are paused for a moment. You keep your place.",
    full_heading: "The waiting room is full",
    full: "Too many visitors are waiting right now. Please try again in a few minutes.",
    maintenance_heading: "Down for maintenance",
    maintenance: "We are working on the site. Please come back a little later.",
    unavailable: "We are letting people in as fast as we can. This page tries again by itself in a moment.",
    position: "Your place in line",
    wait: "Estimated wait",
    note: "Keep this page open: it continues by itself when it is your turn.",
    soon: "less than a minute",
    about: "about ",
    minute: "minute",
    minutes: "minutes",
    sep: " ",
    retry: "Connection problem. Trying again shortly…",
    admitted: "It is your turn. Continuing…",
    no_cookies_heading: "Cookies are needed",
    no_cookies: "Your browser does not keep this site's cookies, so the waiting room cannot keep your place. Allow cookies for this site, then reload the page.",
    limited_heading: "One moment, please",
    limited: "Many requests are coming from your network right now. This page tries again by itself in a moment.",
    checking: "Checking your browser before you join the line…",
    unknown_wait: "not known yet",
    first_estimate: "(a first estimate)",
};

pub(super) const DE: Texts = Texts {
    lang: "de",
    title: "Warteraum",
    queued_heading: "Sie sind in der Warteschlange",
    queued: "Gerade ist viel los. Sie behalten Ihren Platz und werden automatisch eingelassen.",
    paused: "Der Einlass ist kurz pausiert. Sie behalten Ihren Platz.",
    full_heading: "Der Warteraum ist voll",
    full: "Gerade warten zu viele Besucher. Bitte versuchen Sie es in ein paar Minuten erneut.",
    maintenance_heading: "Wartungsarbeiten",
    maintenance: "Wir arbeiten gerade an der Seite. Bitte schauen Sie etwas später wieder vorbei.",
    unavailable: "Wir lassen so schnell wie möglich ein. Diese Seite versucht es gleich von selbst erneut.",
    position: "Ihr Platz in der Schlange",
    wait: "Geschätzte Wartezeit",
    note: "Lassen Sie diese Seite geöffnet: Es geht von selbst weiter, sobald Sie dran sind.",
    soon: "weniger als eine Minute",
    about: "etwa ",
    minute: "Minute",
    minutes: "Minuten",
    sep: " ",
    retry: "Verbindungsproblem. Neuer Versuch in Kürze…",
    admitted: "Sie sind dran. Weiter geht es…",
    no_cookies_heading: "Cookies werden benötigt",
    no_cookies: "Ihr Browser behält die Cookies dieser Seite nicht, daher kann der Warteraum Ihren Platz nicht halten. Erlauben Sie Cookies für diese Seite und laden Sie sie dann neu.",
    limited_heading: "Einen Moment bitte",
    limited: "Aus Ihrem Netz kommen gerade sehr viele Anfragen. Diese Seite versucht es gleich von selbst erneut.",
    checking: "Ihr Browser wird geprüft, bevor Sie sich anstellen…",
    unknown_wait: "noch unbekannt",
    first_estimate: "(erste Schätzung)",
};

pub(super) const FR: Texts = Texts {
    lang: "fr",
    title: "Salle d'attente",
    queued_heading: "Vous êtes dans la file",
    queued: "Le site est très sollicité en ce moment. Vous gardez votre place et entrerez automatiquement.",
    paused: "Les entrées sont suspendues un instant. Vous gardez votre place.",
    full_heading: "La salle d'attente est pleine",
    full: "Trop de visiteurs attendent en ce moment. Veuillez réessayer dans quelques minutes.",
    maintenance_heading: "Maintenance en cours",
    maintenance: "Nous travaillons sur le site. Merci de revenir un peu plus tard.",
    unavailable: "Nous faisons entrer les visiteurs aussi vite que possible. Cette page réessaie d'elle-même dans un instant.",
    position: "Votre place dans la file",
    wait: "Attente estimée",
    note: "Gardez cette page ouverte\u{a0}: elle continue d'elle-même quand c'est votre tour.",
    soon: "moins d'une minute",
    about: "environ ",
    minute: "minute",
    minutes: "minutes",
    sep: " ",
    retry: "Problème de connexion. Nouvel essai dans un instant…",
    admitted: "C'est votre tour. Un instant…",
    no_cookies_heading: "Les cookies sont nécessaires",
    no_cookies: "Votre navigateur ne conserve pas les cookies de ce site\u{a0}: la salle d'attente ne peut donc pas garder votre place. Autorisez les cookies pour ce site, puis rechargez la page.",
    limited_heading: "Un instant, s'il vous plaît",
    limited: "Beaucoup de requêtes arrivent de votre réseau en ce moment. Cette page réessaie d'elle-même dans un instant.",
    checking: "Vérification de votre navigateur avant d'entrer dans la file…",
    unknown_wait: "pas encore connue",
    first_estimate: "(première estimation)",
};

pub(super) const ES: Texts = Texts {
    lang: "es",
    title: "Sala de espera",
    queued_heading: "Estás en la fila",
    queued: "El sitio tiene mucha demanda ahora mismo. Conservas tu lugar y entrarás automáticamente.",
    paused: "Las entradas están en pausa un momento. Conservas tu lugar.",
    full_heading: "La sala de espera está llena",
    full: "Hay demasiadas personas esperando ahora mismo. Vuelve a intentarlo en unos minutos.",
    maintenance_heading: "En mantenimiento",
    maintenance: "Estamos trabajando en el sitio. Vuelve un poco más tarde.",
    unavailable: "Estamos dejando entrar a la gente lo más rápido posible. Esta página lo volverá a intentar sola en un momento.",
    position: "Tu lugar en la fila",
    wait: "Espera estimada",
    note: "Mantén esta página abierta: continuará sola cuando sea tu turno.",
    soon: "menos de un minuto",
    about: "aprox. ",
    minute: "minuto",
    minutes: "minutos",
    sep: " ",
    retry: "Problema de conexión. Reintentando en breve…",
    admitted: "Es tu turno. Continuando…",
    no_cookies_heading: "Se necesitan cookies",
    no_cookies: "Tu navegador no guarda las cookies de este sitio, así que la sala de espera no puede guardar tu lugar. Permite las cookies para este sitio y vuelve a cargar la página.",
    limited_heading: "Un momento, por favor",
    limited: "Están llegando muchas solicitudes desde tu red ahora mismo. Esta página lo volverá a intentar sola en un momento.",
    checking: "Comprobando tu navegador antes de entrar en la fila…",
    unknown_wait: "aún no se sabe",
    first_estimate: "(primera estimación)",
};

pub(super) const IT: Texts = Texts {
    lang: "it",
    title: "Sala d'attesa",
    queued_heading: "Sei in coda",
    queued: "Il sito è molto richiesto in questo momento. Mantieni il tuo posto ed entrerai automaticamente.",
    paused: "Gli ingressi sono sospesi per un momento. Mantieni il tuo posto.",
    full_heading: "La sala d'attesa è piena",
    full: "Ci sono troppi visitatori in attesa. Riprova tra qualche minuto.",
    maintenance_heading: "Manutenzione in corso",
    maintenance: "Stiamo lavorando al sito. Torna un po' più tardi.",
    unavailable: "Stiamo facendo entrare le persone il più velocemente possibile. Questa pagina riprova da sola tra un momento.",
    position: "Il tuo posto in coda",
    wait: "Attesa stimata",
    note: "Tieni aperta questa pagina: proseguirà da sola quando sarà il tuo turno.",
    soon: "meno di un minuto",
    about: "circa ",
    minute: "minuto",
    minutes: "minuti",
    sep: " ",
    retry: "Problema di connessione. Nuovo tentativo a breve…",
    admitted: "È il tuo turno. Un momento…",
    no_cookies_heading: "Servono i cookie",
    no_cookies: "Il tuo browser non conserva i cookie di questo sito, quindi la sala d'attesa non può tenerti il posto. Consenti i cookie per questo sito, poi ricarica la pagina.",
    limited_heading: "Un momento, per favore",
    limited: "Dalla tua rete stanno arrivando molte richieste. Questa pagina riprova da sola tra un momento.",
    checking: "Verifica del browser prima di entrare in coda…",
    unknown_wait: "non ancora nota",
    first_estimate: "(prima stima)",
};

pub(super) const PT: Texts = Texts {
    lang: "pt",
    title: "Sala de espera",
    queued_heading: "Você está na fila",
    queued: "O site está muito movimentado agora. Você mantém o seu lugar e entrará automaticamente.",
    paused: "As entradas estão pausadas por um momento. Você mantém o seu lugar.",
    full_heading: "A sala de espera está cheia",
    full: "Há visitantes demais esperando agora. Tente novamente em alguns minutos.",
    maintenance_heading: "Em manutenção",
    maintenance: "Estamos trabalhando no site. Volte um pouco mais tarde.",
    unavailable: "Estamos deixando as pessoas entrarem o mais rápido possível. Esta página tentará de novo sozinha em instantes.",
    position: "Seu lugar na fila",
    wait: "Espera estimada",
    note: "Mantenha esta página aberta: ela continua sozinha quando chegar a sua vez.",
    soon: "menos de um minuto",
    about: "cerca de ",
    minute: "minuto",
    minutes: "minutos",
    sep: " ",
    retry: "Problema de conexão. Tentando de novo em breve…",
    admitted: "Chegou a sua vez. Continuando…",
    no_cookies_heading: "Os cookies são necessários",
    no_cookies: "Seu navegador não guarda os cookies deste site, então a sala de espera não consegue manter o seu lugar. Permita cookies para este site e recarregue a página.",
    limited_heading: "Um momento, por favor",
    limited: "Muitas solicitações estão vindo da sua rede agora. Esta página tentará de novo sozinha em instantes.",
    checking: "Verificando o seu navegador antes de entrar na fila…",
    unknown_wait: "ainda não se sabe",
    first_estimate: "(primeira estimativa)",
};

pub(super) const NL: Texts = Texts {
    lang: "nl",
    title: "Wachtruimte",
    queued_heading: "Je staat in de rij",
    queued: "Het is nu erg druk op de site. Je houdt je plek en wordt automatisch binnengelaten.",
    paused: "De toegang is even gepauzeerd. Je houdt je plek.",
    full_heading: "De wachtruimte is vol",
    full: "Er wachten nu te veel bezoekers. Probeer het over een paar minuten opnieuw.",
    maintenance_heading: "Onderhoud",
    maintenance: "We werken aan de site. Kom wat later terug.",
    unavailable: "We laten mensen zo snel mogelijk binnen. Deze pagina probeert het zo vanzelf opnieuw.",
    position: "Je plek in de rij",
    wait: "Geschatte wachttijd",
    note: "Houd deze pagina open: hij gaat vanzelf verder als je aan de beurt bent.",
    soon: "minder dan een minuut",
    about: "ongeveer ",
    minute: "minuut",
    minutes: "minuten",
    sep: " ",
    retry: "Verbindingsprobleem. Zo meteen een nieuwe poging…",
    admitted: "Je bent aan de beurt. Een moment…",
    no_cookies_heading: "Cookies zijn nodig",
    no_cookies: "Je browser bewaart de cookies van deze site niet, dus de wachtruimte kan je plek niet vasthouden. Sta cookies toe voor deze site en laad de pagina opnieuw.",
    limited_heading: "Een ogenblik geduld",
    limited: "Er komen nu veel verzoeken uit je netwerk. Deze pagina probeert het zo vanzelf opnieuw.",
    checking: "Je browser wordt gecontroleerd voordat je in de rij komt…",
    unknown_wait: "nog onbekend",
    first_estimate: "(eerste schatting)",
};

pub(super) const PL: Texts = Texts {
    lang: "pl",
    title: "Poczekalnia",
    queued_heading: "Jesteś w kolejce",
    queued: "Strona jest teraz bardzo obciążona. Zachowujesz swoje miejsce, a wejście nastąpi automatycznie.",
    paused: "Wpuszczanie jest na chwilę wstrzymane. Zachowujesz swoje miejsce.",
    full_heading: "Poczekalnia jest pełna",
    full: "Czeka teraz zbyt wiele osób. Spróbuj ponownie za kilka minut.",
    maintenance_heading: "Prace konserwacyjne",
    maintenance: "Pracujemy nad stroną. Wróć nieco później.",
    unavailable: "Wpuszczamy osoby tak szybko, jak to możliwe. Ta strona za chwilę sama spróbuje ponownie.",
    position: "Twoje miejsce w kolejce",
    wait: "Szacowany czas oczekiwania",
    note: "Nie zamykaj tej strony: przejdzie dalej sama, gdy nadejdzie Twoja kolej.",
    soon: "mniej niż minuta",
    about: "około ",
    minute: "minuty",
    minutes: "minut",
    sep: " ",
    retry: "Problem z połączeniem. Za chwilę kolejna próba…",
    admitted: "Twoja kolej. Przechodzimy dalej…",
    no_cookies_heading: "Potrzebne są pliki cookie",
    no_cookies: "Twoja przeglądarka nie zapisuje plików cookie tej strony, więc poczekalnia nie może zachować Twojego miejsca. Zezwól na pliki cookie dla tej strony i odśwież ją.",
    limited_heading: "Chwileczkę",
    limited: "Z Twojej sieci przychodzi teraz wiele żądań. Ta strona za chwilę sama spróbuje ponownie.",
    checking: "Sprawdzamy przeglądarkę, zanim dołączysz do kolejki…",
    unknown_wait: "jeszcze nieznany",
    first_estimate: "(wstępne oszacowanie)",
};

pub(super) const TR: Texts = Texts {
    lang: "tr",
    title: "Bekleme salonu",
    queued_heading: "Sıradasınız",
    queued: "Site şu anda çok yoğun. Yeriniz korunuyor; sıranız gelince otomatik olarak içeri alınacaksınız.",
    paused: "Girişlere kısa bir ara verildi. Yeriniz korunuyor.",
    full_heading: "Bekleme salonu dolu",
    full: "Şu anda çok fazla ziyaretçi bekliyor. Lütfen birkaç dakika sonra tekrar deneyin.",
    maintenance_heading: "Bakım çalışması",
    maintenance: "Site üzerinde çalışıyoruz. Lütfen biraz sonra tekrar gelin.",
    unavailable: "Ziyaretçileri olabildiğince hızlı içeri alıyoruz. Bu sayfa birazdan kendiliğinden tekrar deneyecek.",
    position: "Sıradaki yeriniz",
    wait: "Tahmini bekleme süresi",
    note: "Bu sayfayı açık tutun: sıranız geldiğinde kendiliğinden devam eder.",
    soon: "bir dakikadan az",
    about: "yaklaşık ",
    minute: "dakika",
    minutes: "dakika",
    sep: " ",
    retry: "Bağlantı sorunu. Birazdan tekrar denenecek…",
    admitted: "Sıra sizde. Devam ediliyor…",
    no_cookies_heading: "Çerezler gerekli",
    no_cookies: "Tarayıcınız bu sitenin çerezlerini saklamıyor, bu yüzden bekleme salonu yerinizi koruyamıyor. Bu site için çerezlere izin verin ve sayfayı yeniden yükleyin.",
    limited_heading: "Lütfen biraz bekleyin",
    limited: "Şu anda ağınızdan çok sayıda istek geliyor. Bu sayfa birazdan kendiliğinden tekrar deneyecek.",
    checking: "Sıraya girmeden önce tarayıcınız kontrol ediliyor…",
    unknown_wait: "henüz bilinmiyor",
    first_estimate: "(ilk tahmin)",
};

pub(super) const SV: Texts = Texts {
    lang: "sv",
    title: "Väntrum",
    queued_heading: "Du står i kö",
    queued: "Det är väldigt många på webbplatsen just nu. Du behåller din plats och släpps in automatiskt.",
    paused: "Insläppet är pausat en stund. Du behåller din plats.",
    full_heading: "Väntrummet är fullt",
    full: "Just nu väntar för många besökare. Försök igen om några minuter.",
    maintenance_heading: "Underhåll pågår",
    maintenance: "Vi arbetar med webbplatsen. Kom tillbaka lite senare.",
    unavailable: "Vi släpper in besökare så fort vi kan. Sidan försöker igen av sig själv om en stund.",
    position: "Din plats i kön",
    wait: "Beräknad väntetid",
    note: "Håll sidan öppen: den fortsätter av sig själv när det är din tur.",
    soon: "mindre än en minut",
    about: "cirka ",
    minute: "minut",
    minutes: "minuter",
    sep: " ",
    retry: "Anslutningsproblem. Försöker igen strax…",
    admitted: "Nu är det din tur. Ett ögonblick…",
    no_cookies_heading: "Cookies behövs",
    no_cookies: "Din webbläsare sparar inte webbplatsens cookies, så väntrummet kan inte hålla din plats. Tillåt cookies för webbplatsen och ladda sedan om sidan.",
    limited_heading: "Ett ögonblick",
    limited: "Just nu kommer många förfrågningar från ditt nätverk. Sidan försöker igen av sig själv om en stund.",
    checking: "Din webbläsare kontrolleras innan du ställer dig i kön…",
    unknown_wait: "ännu okänd",
    first_estimate: "(första uppskattning)",
};

pub(super) const JA: Texts = Texts {
    lang: "ja",
    title: "待合室",
    queued_heading: "順番待ちの列に並んでいます",
    queued: "ただいまサイトが大変混み合っています。順番はそのまま保たれ、順番が来ると自動的にご案内します。",
    paused: "ご案内を一時停止しています。順番はそのまま保たれます。",
    full_heading: "待合室が満員です",
    full: "現在、お待ちの方が多すぎます。数分後にもう一度お試しください。",
    maintenance_heading: "メンテナンス中",
    maintenance: "ただいまメンテナンス中です。しばらくしてからもう一度お越しください。",
    unavailable: "できるだけ早くご案内しています。このページはまもなく自動的に再試行します。",
    position: "あなたの順番",
    wait: "推定待ち時間",
    note: "このページを開いたままにしてください。順番が来ると自動的に進みます。",
    soon: "1分未満",
    about: "約",
    minute: "分",
    minutes: "分",
    sep: "",
    retry: "接続に問題があります。まもなく再試行します…",
    admitted: "あなたの番です。移動しています…",
    no_cookies_heading: "Cookieが必要です",
    no_cookies: "お使いのブラウザーがこのサイトのCookieを保存しないため、待合室で順番を保てません。このサイトのCookieを許可してから、ページを再読み込みしてください。",
    limited_heading: "少々お待ちください",
    limited: "現在、お使いのネットワークから多数のリクエストが届いています。このページはまもなく自動的に再試行します。",
    checking: "列に並ぶ前にブラウザーを確認しています…",
    unknown_wait: "まだ分かりません",
    first_estimate: "（暫定）",
};

pub(super) const ZH: Texts = Texts {
    lang: "zh",
    title: "等候室",
    queued_heading: "您正在排队",
    queued: "网站目前访问量很大。您的位置会一直保留，轮到您时将自动进入。",
    paused: "入场暂时暂停，您的位置会保留。",
    full_heading: "等候室已满",
    full: "目前等候的访客过多，请几分钟后再试。",
    maintenance_heading: "维护中",
    maintenance: "我们正在维护网站，请稍后再来。",
    unavailable: "我们正在尽快让大家进入。此页面稍后会自动重试。",
    position: "您的排队位置",
    wait: "预计等候时间",
    note: "请保持此页面打开：轮到您时会自动继续。",
    soon: "不到一分钟",
    about: "约",
    minute: "分钟",
    minutes: "分钟",
    sep: "",
    retry: "连接出现问题，即将重试…",
    admitted: "轮到您了，正在继续…",
    no_cookies_heading: "需要启用 Cookie",
    no_cookies: "您的浏览器没有保存本网站的 Cookie，因此等候室无法保留您的位置。请允许本网站使用 Cookie，然后重新加载页面。",
    limited_heading: "请稍候",
    limited: "目前有大量请求来自您的网络。此页面稍后会自动重试。",
    checking: "加入队列前正在检查您的浏览器…",
    unknown_wait: "暂时无法估计",
    first_estimate: "（初步估计）",
};
